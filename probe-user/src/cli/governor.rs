//! `tailprobe governor`: read, set and restore the CPU frequency governor.

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

use super::node_common::{self as nc, NodeArgs};
use crate::node::{
    governor::{self, SetError},
    journal::{self, Found},
    Roots,
};

/// Read, set or restore the cpufreq governor of every policy.
///
/// Where the node has no cpufreq (most VMs), every subcommand says "not
/// available on this node" and exits with code 4. With intel_pstate or
/// amd-pstate in active mode only `performance` and `powersave` exist; the
/// driver mode is never switched (that resets every cpufreq setting).
#[derive(Debug, Args)]
pub struct GovernorArgs {
    #[command(subcommand)]
    pub action: GovernorAction,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Subcommand)]
pub enum GovernorAction {
    /// Show the driver, its mode and each policy's governor.
    Get {
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Set a governor on every policy, journaled first. Without a command
    /// or --duration the change is held until `tailprobe governor restore`.
    Set {
        /// The governor, one of `scaling_available_governors`.
        name: String,
        /// Keep the governor for this long, then restore.
        #[arg(long, value_parser = super::parse_duration, conflicts_with = "cmd")]
        duration: Option<Duration>,
        /// Run this command with the governor set, then restore.
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Put back the governors tailprobe changed (from the journal).
    Restore,
}

pub fn main(args: &GovernorArgs) -> Result<i32> {
    let roots = args.node.roots();
    match &args.action {
        GovernorAction::Get { json } => get(&roots, *json),
        GovernorAction::Set {
            name,
            duration,
            cmd,
        } => set(args, &roots, name, *duration, cmd),
        GovernorAction::Restore => restore(args),
    }
}

/// `tailprobe governor get`.
fn get(roots: &Roots, json: bool) -> Result<i32> {
    let cf = match governor::read(roots) {
        Ok(cf) => cf,
        Err(na) => return Ok(nc::not_available(&na)),
    };
    if json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            cf: &'a governor::CpuFreq,
            available: Vec<String>,
            note: Option<String>,
        }
        nc::print_json(&Out {
            cf: &cf,
            available: cf.available(),
            note: cf.pstate_note(),
        })?;
    } else {
        crate::out::println(format_args!(
            "driver {}; available: {}",
            cf.driver_words(),
            cf.available().join(" ")
        ))?;
        for p in &cf.policies {
            crate::out::println(format_args!(
                "{} CPUs {}: {}{}",
                p.name,
                p.cpus,
                p.governor,
                p.epp
                    .as_deref()
                    .map(|e| format!(" (EPP {e})"))
                    .unwrap_or_default()
            ))?;
        }
        if let Some(n) = cf.pstate_note() {
            crate::out::println(format_args!("note: {n}"))?;
        }
    }
    Ok(super::exit::OK)
}

/// `tailprobe governor set`: journaled, then held, timed or around a command.
fn set(
    args: &GovernorArgs,
    roots: &Roots,
    name: &str,
    duration: Option<Duration>,
    cmd: &[String],
) -> Result<i32> {
    // Validate before touching the journal: bad input changes nothing.
    let cf = match governor::read(roots) {
        Ok(cf) => cf,
        Err(na) => return Ok(nc::not_available(&na)),
    };
    governor::validate(&cf, name)?;
    let mut j = args.node.begin_journal()?;
    let before = match governor::set(roots, &mut j, name) {
        Ok(b) => b,
        Err(SetError::NotAvailable(na)) => return Ok(nc::not_available(&na)),
        Err(e) => return Err(e).context("setting the governor"),
    };
    for p in &before {
        eprintln!(
            "tailprobe: {} (CPUs {}): {} -> {name}",
            p.name, p.cpus, p.governor
        );
    }
    if !cmd.is_empty() {
        let mut child = nc::command(cmd)?
            .spawn()
            .with_context(|| format!("starting {:?}", cmd[0]))?;
        let st = nc::wait_child(&mut child, None)?;
        let code = nc::report_restore(&j.restore()?);
        return Ok(if code != 0 {
            code
        } else {
            st.code().unwrap_or(super::exit::ERROR)
        });
    }
    if let Some(d) = duration {
        nc::sleep_unless_stopped(d);
        return Ok(nc::report_restore(&j.restore()?));
    }
    let n = j.hold()?;
    eprintln!(
        "tailprobe: {n} change(s) held in {}; `tailprobe governor restore` puts them back",
        args.node.journal_path().display()
    );
    Ok(super::exit::OK)
}

/// `tailprobe governor restore`: only the governor knobs of the journal.
fn restore(args: &GovernorArgs) -> Result<i32> {
    let path = args.node.journal_path();
    let (found, _lock) = journal::inspect(&path, std::path::Path::new("/proc"))?;
    let data = match found {
        Found::Nothing => {
            eprintln!(
                "tailprobe: nothing to restore ({} does not exist)",
                path.display()
            );
            return Ok(super::exit::OK);
        }
        Found::Stale(d) => {
            eprintln!(
                "tailprobe: {} is from another boot (boot id {}): not applied; see `tailprobe restore`",
                path.display(),
                d.boot_id
            );
            return Ok(crate::node::exit::STALE_JOURNAL);
        }
        Found::Crashed(d) | Found::Held(d) => d,
    };
    let rep = journal::restore_found(
        &path,
        std::path::Path::new("/proc"),
        &data,
        |e| !matches!(&e.knob, journal::Knob::File { path, .. } if governor::is_governor_knob(path)),
    )?;
    if rep.restored.is_empty() && rep.failed.is_empty() {
        eprintln!("tailprobe: no governor change in {}", path.display());
    }
    Ok(nc::report_restore(&rep))
}
