//! `shimmer plugins inspect`: what a plugin provides, for a given config.

use super::{DomainHandle, PluginLibrary};
use anyhow::{Context, Result};
use serde::Serialize;
use shimmer_plugin_api::{DomainInfo, LossSpec, LossUse};
use std::fmt::Write as _;

/// A plugin's identity and the domains it created from the config.
#[derive(Debug, Serialize)]
pub struct PluginReport {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// ABI version.
    pub abi_version: u32,
    /// ABI minor version the plugin was built against.
    pub abi_minor: u32,
    /// The library file.
    pub path: String,
    /// Every domain kind the plugin can create.
    pub domain_kinds: Vec<String>,
    /// One entry per domain kind inspected.
    pub domains: Vec<DomainReport>,
    /// Kinds that need a config to say more (no `--config` was given):
    /// each with what the plugin said of the empty one.
    pub needs_config: Vec<NeedsConfig>,
}

/// A domain kind that cannot be created without a config.
#[derive(Debug, Serialize)]
pub struct NeedsConfig {
    /// Domain kind.
    pub kind: String,
    /// What the plugin answered to an empty config (e.g. `missing field
    /// `dim``): what the domain needs.
    pub says: String,
}

/// One domain kind, as created from the config.
#[derive(Debug, Serialize)]
pub struct DomainReport {
    /// Domain kind.
    pub kind: String,
    /// Dimensions and split sizes.
    #[serde(flatten)]
    pub info: DomainInfo,
    /// Loss spec.
    pub loss_spec: LossSpec,
    /// `[width, height]` of the image an item is drawn as, if the domain draws.
    pub render_size: Option<[u32; 2]>,
}

impl DomainReport {
    fn of(domain: &DomainHandle) -> Self {
        Self {
            kind: domain.kind().to_string(),
            info: *domain.info(),
            loss_spec: domain.loss_spec().clone(),
            render_size: domain.render_size().map(|(w, h)| [w, h]),
        }
    }
}

/// Loads `plugin` (a path or a name), creates each domain kind (or only
/// `kind`) from `config_json`, and describes them. Without a config
/// (`None`), kinds that refuse an empty one are listed with what the
/// plugin says they need instead of failing the report.
pub fn report(plugin: &str, config_json: Option<&str>, kind: Option<&str>) -> Result<PluginReport> {
    let given = config_json.is_some();
    let config_json = config_json.unwrap_or("{}");
    serde_json::from_str::<serde_json::Value>(config_json)
        .with_context(|| format!("--config is not valid JSON: {config_json}"))?;
    let library = PluginLibrary::find(plugin, &[])?;
    let kinds: Vec<String> = match kind {
        Some(k) => vec![k.to_string()],
        None => library.domain_kinds().to_vec(),
    };
    let mut domains = Vec::new();
    let mut needs_config = Vec::new();
    for k in &kinds {
        match library.create_domain(k, config_json) {
            Ok(d) => domains.push(DomainReport::of(&d)),
            Err(crate::PluginError::Call {
                message,
                panicked: false,
                ..
            }) if !given => {
                needs_config.push(NeedsConfig {
                    kind: k.clone(),
                    says: message,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (abi_version, abi_minor) = library.abi();
    Ok(PluginReport {
        name: library.name().to_string(),
        version: library.version().to_string(),
        abi_version,
        abi_minor,
        path: std::path::absolute(library.source())
            .unwrap_or_else(|_| library.source().to_path_buf())
            .display()
            .to_string(),
        domain_kinds: library.domain_kinds().to_vec(),
        domains,
        needs_config,
    })
}

/// Human-readable form of a report.
pub fn render(report: &PluginReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "plugin  {} {} (ABI v{}.{})\nfile    {}",
        report.name, report.version, report.abi_version, report.abi_minor, report.path
    );
    let _ = writeln!(s, "kinds   {}", report.domain_kinds.join(", "));
    for n in &report.needs_config {
        let _ = writeln!(
            s,
            "domain  {}\n  needs a config (--config '{{...}}', or `config:` in the experiment); \
             with none the plugin says: {}",
            n.kind, n.says
        );
    }
    for d in &report.domains {
        let i = &d.info;
        let _ = writeln!(s, "domain  {}", d.kind);
        let _ = writeln!(s, "  latent dim    {}", i.latent_dim);
        let _ = writeln!(s, "  item length   {} (f32)", i.item_len);
        let _ = writeln!(
            s,
            "  splits        train {}, val {}, test {}",
            i.split_sizes.train, i.split_sizes.val, i.split_sizes.test
        );
        let own = |yes: bool| if yes { "plugin" } else { "identity" };
        let _ = writeln!(
            s,
            "  encode        {}\n  decode        {}",
            own(i.has_encode),
            own(i.has_decode)
        );
        match d.render_size {
            Some([w, h]) => {
                let _ = writeln!(s, "  drawn as      {w}x{h} RGB images");
            }
            None => {
                let _ = writeln!(s, "  drawn as      (does not draw its items)");
            }
        }
        let _ = writeln!(s, "  loss spec");
        for seg in &d.loss_spec.segments {
            let uses: Vec<String> = LossUse::ALL
                .iter()
                .map(|&u| match seg.weights.get(u) {
                    Some(w) => format!("{} {w}", use_name(u)),
                    None => format!("{} off", use_name(u)),
                })
                .collect();
            let _ = writeln!(
                s,
                "    {:<13} columns {}..{}  ({})",
                seg.kind.name(),
                seg.start,
                seg.start + seg.len,
                uses.join(", ")
            );
        }
    }
    s
}

fn use_name(u: LossUse) -> &'static str {
    match u {
        LossUse::DemiCycle => "demi_cycle",
        LossUse::Cycle => "cycle",
        LossUse::Translation => "translation",
        LossUse::Fused => "fused",
    }
}

/// Prints what a plugin provides, as text or JSON.
pub fn run(plugin: &str, config_json: Option<&str>, kind: Option<&str>, json: bool) -> Result<()> {
    let report = report(plugin, config_json, kind)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}
