//! Unit tests of the Simple Shapes plugin: determinism, geometry and
//! colour of the drawing, and agreement with the real sample dataset.

use super::*;
use attributes::hls_to_rgb;

fn sample_dir() -> Option<PathBuf> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/simple-shapes-sample");
    dir.exists().then_some(dir)
}

fn domain(kind: &str, config: &str) -> Box<dyn Domain> {
    SimpleShapes::create_domain(kind, config).unwrap()
}

fn load(d: &dyn Domain, split: Split, indices: &[u64]) -> Vec<f32> {
    let mut out = vec![0.0; indices.len() * d.info().item_len];
    d.load(split, indices, &mut out).unwrap();
    out
}

/// `(row, column) -> [r, g, b]` of a channels-first image in [0, 1].
fn pixel(img: &[f32], row: usize, col: usize) -> [u8; 3] {
    let plane = IMAGE_SIZE * IMAGE_SIZE;
    [0, 1, 2].map(|c| (img[c * plane + row * IMAGE_SIZE + col] * 255.0).round() as u8)
}

#[test]
fn the_same_item_gives_the_same_bytes_from_any_number_of_threads() {
    let d = domain("v", r#"{"seed": 3, "train": 1000}"#);
    let serial = load(d.as_ref(), Split::Train, &(0..64).collect::<Vec<_>>());
    let parts: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let d = &d;
                s.spawn(move || {
                    load(
                        d.as_ref(),
                        Split::Train,
                        &(t * 16..t * 16 + 16).collect::<Vec<_>>(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(serial, parts.concat());
    let again = load(domain("v", r#"{"seed": 3}"#).as_ref(), Split::Train, &[5]);
    assert_eq!(again, serial[5 * IMAGE_LEN..6 * IMAGE_LEN]);
    let other_seed = load(domain("v", r#"{"seed": 4}"#).as_ref(), Split::Train, &[5]);
    assert_ne!(other_seed, again);
    let other_split = load(d.as_ref(), Split::Val, &[5]);
    assert_ne!(other_split, again);
}

#[test]
fn the_shape_sits_at_its_location_in_its_colour() {
    let attr = domain("attr", r#"{"seed": 1, "train": 600}"#);
    let v = domain("v", r#"{"seed": 1, "train": 600}"#);
    let indices: Vec<u64> = (0..600).collect();
    let images = load(v.as_ref(), Split::Train, &indices);
    let mut exact = 0;
    for (i, img) in images.chunks(IMAGE_LEN).enumerate() {
        let a = Attributes::sample(1, Split::Train, i as u64, &Ranges::default());
        assert_eq!(load(attr.as_ref(), Split::Train, &[i as u64]), a.vector());
        let (x, y) = (a.x as usize, a.y as usize);
        let got = pixel(img, 31 - y, x);
        // The pixel up-right of the centre is inside the shape: its colour
        // is the item's, exactly unless a thin shape's edge crosses it.
        if got == a.rgb {
            exact += 1;
        }
        let bright = |c: [u8; 3]| c.iter().map(|&v| u32::from(v)).sum::<u32>();
        assert!(
            bright(got) * 2 >= bright(a.rgb),
            "item {i}: {got:?} vs {:?} ({a:?})",
            a.rgb
        );
        // Centroid of the lit pixels, weighted by coverage, in data
        // coordinates (pixel centres at +0.5, y up).
        let (mut w, mut cx, mut cy) = (0.0f32, 0.0f32, 0.0f32);
        for row in 0..IMAGE_SIZE {
            for col in 0..IMAGE_SIZE {
                let p = pixel(img, row, col);
                let lit = bright(p) as f32 / bright(a.rgb).max(1) as f32;
                w += lit;
                cx += lit * (col as f32 + 0.5);
                cy += lit * (IMAGE_SIZE as f32 - row as f32 - 0.5);
            }
        }
        if bright(a.rgb) > 30 {
            let (cx, cy) = (cx / w, cy / w);
            let off = (cx - a.x).hypot(cy - a.y);
            if a.class == 2 {
                // A triangle's area centroid sits a third of its height
                // above its base: size / 6 below (x, y) before rotation,
                // up to 2.33 px for size 14.
                let (sin, cos) = a.rotation.sin_cos();
                let (gx, gy) = (a.x + sin * a.size / 6.0, a.y - cos * a.size / 6.0);
                let geo = (cx - gx).hypot(cy - gy);
                assert!(
                    geo <= 0.3,
                    "item {i}: centroid ({cx}, {cy}) vs the triangle's ({gx}, {gy})"
                );
                assert!(off <= a.size / 6.0 + 0.3, "item {i}: {off}");
            } else {
                assert!(
                    off <= 2.0,
                    "item {i}: centroid ({cx}, {cy}) vs ({}, {})",
                    a.x,
                    a.y
                );
            }
        }
    }
    assert!(exact >= 570, "{exact} of 600 exact");
}

#[test]
fn classes_cover_the_areas_of_their_outlines() {
    // Unit-square areas: diamond 0.5, triangle 0.3; the egg lies between.
    let coverage = |class: usize| {
        let a = Attributes {
            class,
            x: 16.0,
            y: 16.0,
            size: 14.0,
            rotation: 0.7,
            rgb: [200, 100, 50],
            hls: [0; 3],
            unpaired: 0.0,
        };
        let mut img = vec![0.0; IMAGE_LEN];
        image_values(&a, &mut img).unwrap();
        img[..IMAGE_SIZE * IMAGE_SIZE].iter().sum::<f32>() / (200.0 / 255.0) / 196.0
    };
    let (diamond, egg, triangle) = (coverage(0), coverage(1), coverage(2));
    assert!((diamond - 0.5).abs() < 0.01, "{diamond}");
    assert!((triangle - 0.3).abs() < 0.01, "{triangle}");
    assert!(egg > diamond + 0.05 && egg < 0.8, "{egg}");
}

#[test]
fn attribute_vectors_decode_back() {
    for i in 0..200 {
        let a = Attributes::sample(9, Split::Test, i, &Ranges::default());
        let b = Attributes::from_vector(&a.vector());
        assert_eq!((b.class, b.rgb), (a.class, a.rgb));
        assert!(
            (b.x - a.x).abs() < 1e-4 && (b.y - a.y).abs() < 1e-4 && (b.size - a.size).abs() < 1e-4
        );
        let dr = (b.rotation - a.rotation).abs();
        assert!(
            dr < 1e-4 || (dr - std::f32::consts::TAU).abs() < 1e-4,
            "{a:?} {b:?}"
        );
        assert_eq!(Attributes::from_label_row(&a.label_row()).unwrap(), a);
        assert_eq!(hls_to_rgb(a.hls), a.rgb);
        assert!((7.0..=24.0).contains(&a.x) && (7.0..=24.0).contains(&a.y));
        assert!((7.0..=14.0).contains(&a.size));
        assert!(a.hls[1] >= 46 && a.hls[0] <= 180);
    }
}

/// Mean absolute difference, in grey levels, between the plugin's drawing
/// of the sample's labels and the sample's own PNGs (drawn by matplotlib).
#[test]
fn the_sample_labels_draw_the_sample_images() {
    let Some(root) = sample_dir() else { return };
    let config = format!(r#"{{"dataset": "{}"}}"#, root.display());
    let (attr, v) = (domain("attr", &config), domain("v", &config));
    assert_eq!(
        v.info().split_sizes,
        SplitSizes {
            train: 4,
            val: 2,
            test: 2
        }
    );
    let mut worst = 0.0f32;
    for split in Split::ALL {
        let labels =
            shimmer_formats::npy::open_npy(&root.join(format!("{split}_labels.npy"))).unwrap();
        for i in 0..labels.rows() as u64 {
            let mut row = [0.0; LABEL_LEN];
            labels.read_rows(&[i], None, &mut row).unwrap();
            let a = Attributes::from_label_row(&row).unwrap();
            assert_eq!(hls_to_rgb(a.hls), a.rgb, "OpenCV's HLS -> RGB of {row:?}");
            assert_eq!(load(attr.as_ref(), split, &[i]), a.vector());
            let mut drawn = vec![0.0; IMAGE_LEN];
            image_values(&a, &mut drawn).unwrap();
            let file = load(v.as_ref(), split, &[i]);
            let mad = drawn
                .iter()
                .zip(&file)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / IMAGE_LEN as f32
                * 255.0;
            worst = worst.max(mad);
            // The location's pixel holds the colour (times its coverage by
            // the shape: a thin triangle's edge may cross it).
            let at = pixel(&file, 31 - a.y as usize, a.x as usize);
            let coverage = f32::from(at[0]) / f32::from(a.rgb[0]).max(1.0);
            assert!(coverage > 0.9, "{at:?} vs {:?}", a.rgb);
            for c in 0..3 {
                let want = f32::from(a.rgb[c]) * coverage;
                assert!(
                    (f32::from(at[c]) - want).abs() <= 1.5,
                    "{at:?} vs {:?}",
                    a.rgb
                );
            }
        }
    }
    // Measured: 0.06 to 0.31 grey levels per value (anti-aliasing differs
    // from matplotlib's at the edges only).
    assert!(worst < 0.5, "mean absolute difference {worst} grey levels");
}

#[test]
fn bad_settings_and_indices_are_refused() {
    let e = SimpleShapes::create_domain("v", r#"{"dataset": "/nonexistent", "train": 3}"#)
        .err()
        .unwrap();
    assert!(e.message().contains("sizes come from the files"), "{e}");
    let e = SimpleShapes::create_domain("attr", r#"{"dataset": "/nonexistent"}"#)
        .err()
        .unwrap();
    assert!(
        e.message()
            .contains("/nonexistent/train_labels.npy: cannot open"),
        "{e}"
    );
    let d = domain("attr", r#"{"train": 3}"#);
    let mut out = [0.0; ATTR_LEN];
    let e = d.load(Split::Train, &[3], &mut out).unwrap_err();
    assert!(e.message().contains("train item 3 is past the end"), "{e}");
    assert!(SimpleShapes::create_domain("attr", r#"{"sed": 3}"#).is_err());
    let e = SimpleShapes::create_domain("v", r#"{"sizes": [14, 7]}"#)
        .err()
        .unwrap();
    assert!(e.message().contains("`sizes` [14, 7]"), "{e}");
    // One pose: every item upright, centred, of size 14.
    let one = domain(
        "attr",
        r#"{"sizes": [14, 14], "locations": [16, 16], "rotations": [0, 0]}"#,
    );
    let v = load(one.as_ref(), Split::Train, &(0..20).collect::<Vec<_>>());
    for item in v.chunks(ATTR_LEN) {
        assert_eq!(&item[3..8], &[0.0f32, 0.0, 1.0, 1.0, 0.0]);
    }
}

#[test]
fn both_domains_draw_an_item_as_its_image() {
    let (v, attr) = (domain("v", "{}"), domain("attr", "{}"));
    assert_eq!(attr.render_size(), Some((32, 32)));
    let indices: Vec<u64> = (0..20).collect();
    let (images, vectors) = (
        load(v.as_ref(), Split::Val, &indices),
        load(attr.as_ref(), Split::Val, &indices),
    );
    let mut from_v = vec![0u8; 20 * IMAGE_LEN];
    v.render(&images, &mut from_v).unwrap();
    let mut from_attr = vec![0u8; 20 * IMAGE_LEN];
    attr.render(&vectors, &mut from_attr).unwrap();
    // The attribute vector holds the colour rounded through [-1, 1]: the
    // drawings agree to a grey level.
    let diff = from_v
        .iter()
        .zip(&from_attr)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(diff <= 1, "{diff}");
    for (k, rgb) in from_v.chunks(IMAGE_LEN).enumerate() {
        let a = Attributes::sample(0, Split::Val, k as u64, &Ranges::default());
        let at = ((31 - a.y as usize) * IMAGE_SIZE + a.x as usize) * 3;
        assert_eq!(
            rgb[at..at + 3],
            pixel(&images[k * IMAGE_LEN..], 31 - a.y as usize, a.x as usize)
        );
    }
    // Predictions out of range are drawn, not refused.
    let wild = [
        5.0f32,
        -3.0,
        f32::NAN,
        9.0,
        -9.0,
        0.0,
        0.0,
        0.0,
        2.0,
        2.0,
        2.0,
    ];
    attr.render(&wild, &mut from_attr[..IMAGE_LEN]).unwrap();
}
