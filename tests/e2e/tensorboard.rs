//! Event files written by shimmer, read back by TensorBoard's own reader.

use crate::common;

use shimmer_tensorboard::{EventWriter, HParam, HParamColumn, SessionStatus};

#[test]
fn tensorboard_reads_back_every_scalar_text_and_hparam() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = EventWriter::create(dir.path()).unwrap();
    let mut expected = Vec::new();
    for step in 0..50i64 {
        let loss = 1.0 / (1.0 + step as f32) + 1e-7 * step as f32;
        tb.scalar("train/loss", step, loss).unwrap();
        expected.push((step, loss));
        if step % 10 == 9 {
            tb.scalar("val/demi_cycles", step, 0.25 * step as f32)
                .unwrap();
        }
    }
    tb.text("config", 0, "```yaml\nname: tutorial\nseed: 0\n```")
        .unwrap();
    let values = [
        ("optim.lr".to_string(), HParam::Number(3e-4)),
        (
            "workspace.flavour".to_string(),
            HParam::Text("fusion".into()),
        ),
        (
            "workspace.contrastive.learn".to_string(),
            HParam::Bool(true),
        ),
    ];
    let columns: Vec<HParamColumn> = values
        .iter()
        .map(|(name, sample)| HParamColumn {
            name: name.clone(),
            sample: sample.clone(),
            differs: name == "optim.lr",
        })
        .collect();
    tb.hparams_experiment(&columns, &["val/loss".to_string()])
        .unwrap();
    tb.session_start(&values).unwrap();
    tb.session_end(SessionStatus::Success).unwrap();
    tb.flush().unwrap();
    drop(tb);

    let read = common::read_tensorboard(dir.path());
    let loss = read["scalars"]["train/loss"].as_array().unwrap();
    assert_eq!(loss.len(), expected.len());
    for (got, (step, value)) in loss.iter().zip(&expected) {
        assert_eq!(got[0].as_i64(), Some(*step));
        // Stored as float32: read back bit for bit.
        assert_eq!(got[1].as_f64().map(|v| v as f32), Some(*value));
    }
    let val = read["scalars"]["val/demi_cycles"].as_array().unwrap();
    assert_eq!(val.len(), 5);
    assert_eq!(val[4][0].as_i64(), Some(49));
    assert_eq!(val[4][1].as_f64(), Some(12.25));

    assert_eq!(
        read["text"]["config"][0][1][0].as_str(),
        Some("```yaml\nname: tutorial\nseed: 0\n```")
    );

    let start = &read["hparams"]["_hparams_/session_start_info"]["session_start_info"]["hparams"];
    assert_eq!(start["optim.lr"].as_f64(), Some(3e-4));
    assert_eq!(start["workspace.flavour"].as_str(), Some("fusion"));
    assert_eq!(start["workspace.contrastive.learn"].as_bool(), Some(true));
    let exp = &read["hparams"]["_hparams_/experiment"]["experiment"];
    assert_eq!(
        exp["metric_infos"][0]["name"]["tag"].as_str(),
        Some("val/loss")
    );
    assert_eq!(exp["hparam_infos"].as_array().map(Vec::len), Some(3));
    assert_eq!(exp["hparam_infos"][0]["differs"].as_bool(), Some(true));
    assert_eq!(
        exp["hparam_infos"][1]["type"].as_str(),
        Some("DATA_TYPE_STRING")
    );
    let end = &read["hparams"]["_hparams_/session_end_info"]["session_end_info"];
    assert_eq!(end["status"].as_str(), Some("STATUS_SUCCESS"));
}

#[test]
fn unwritable_folder_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = EventWriter::create(&file.join("run")).err().unwrap();
    assert!(
        format!("{err:#}").contains("cannot create TensorBoard folder"),
        "{err:#}"
    );
}
