//! The packaged tailprobe (`cargo xtask dist`, docs/dist.md): what the
//! tarball, the .deb and the OCI image hold, the .deb installed into a
//! scratch root (its postinst included), and the packaged static binary
//! recording a known workload, compared with schedstat as record_sched does,
//! with no Rust, cargo or LLVM on its PATH.
//!
//! The musl release build behind the packages takes about 19 CPU-minutes
//! cold, so this file does not build them unasked: it uses `target/dist/`
//! (or `$TAILPROBE_DIST_DIR`) when the packages are there; with
//! `TAILPROBE_DIST_TEST=1` it runs `cargo xtask dist` once when they are
//! missing; otherwise each test prints a SKIP line saying how to run it.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use clap::CommandFactory as _;
use tailprobe_tests::{skip, skip_unless_root, spin2_agrees_with_schedstat, Recording, Workload};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

struct Dist {
    tarball: PathBuf,
    deb: PathBuf,
    image: PathBuf,
    /// The tarball unpacked (its top directory).
    tree: PathBuf,
    /// Scratch space of this test process, removed at exit by nobody: under
    /// the system temp dir, named by pid.
    scratch: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The one file in `dir` whose name starts with `prefix` and ends with `suffix`.
fn find(dir: &Path, prefix: &str, suffix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    found.sort();
    (found.len() == 1).then(|| found.remove(0))
}

fn locate(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    Some((
        find(dir, "tailprobe-", "-x86_64-linux-musl.tar.gz")?,
        find(dir, "tailprobe_", "_amd64.deb")?,
        find(dir, "tailprobe-", "-oci.tar")?,
    ))
}

/// Run a command that must succeed; its stdout.
fn out(c: &mut Command) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("starting {c:?}: {e}"));
    assert!(
        o.status.success(),
        "{c:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn build_or_find() -> Result<Dist, String> {
    let dir = std::env::var_os("TAILPROBE_DIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/dist"));
    let (tarball, deb, image) = match locate(&dir) {
        Some(f) => f,
        None if std::env::var("TAILPROBE_DIST_TEST").is_ok_and(|v| v == "1") => {
            eprintln!(
                "dist_package: no packages in {}: running cargo xtask dist",
                dir.display()
            );
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let st = Command::new(&cargo)
                .args(["xtask", "dist"])
                .current_dir(workspace())
                .status()
                .map_err(|e| format!("starting {cargo} xtask dist: {e}"))?;
            assert!(st.success(), "cargo xtask dist failed ({st})");
            locate(&dir).unwrap_or_else(|| {
                panic!(
                    "cargo xtask dist succeeded but {} lacks a package",
                    dir.display()
                )
            })
        }
        None => {
            return Err(format!(
                "no packages in {}: run `cargo xtask dist` first (a cold musl release build, \
                 about 19 CPU-minutes), or set TAILPROBE_DIST_TEST=1 to have this test build them",
                dir.display()
            ))
        }
    };
    let scratch = std::env::temp_dir().join(format!("tailprobe-dist-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    // Reachable by a non-root user (the postinst test runs the binary as one).
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let unpacked = scratch.join("tar");
    std::fs::create_dir_all(&unpacked).expect("tar dir");
    out(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&unpacked));
    let tree = std::fs::read_dir(&unpacked)
        .expect("unpacked tarball")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .next()
        .expect("the tarball has a top directory");
    Ok(Dist {
        tarball,
        deb,
        image,
        tree,
        scratch,
    })
}

/// The packages, or None after a SKIP line.
fn dist(test: &str) -> Option<&'static Dist> {
    static D: OnceLock<Result<Dist, String>> = OnceLock::new();
    match D.get_or_init(build_or_find) {
        Ok(d) => Some(d),
        Err(why) => {
            skip(test, why);
            None
        }
    }
}

/// $PATH without any directory that holds cargo, rustc, rustup, bpf-linker,
/// clang or an llvm tool, nor one under .cargo, .rustup or an llvm prefix.
fn path_without_toolchains() -> String {
    const TOOLS: [&str; 6] = [
        "cargo",
        "rustc",
        "rustup",
        "bpf-linker",
        "clang",
        "llvm-config",
    ];
    let path = std::env::var("PATH").unwrap_or_default();
    let kept: Vec<&str> = path
        .split(':')
        .filter(|d| !d.is_empty())
        .filter(|d| !(d.contains(".cargo") || d.contains(".rustup") || d.contains("llvm")))
        .filter(|d| !TOOLS.iter().any(|t| Path::new(d).join(t).exists()))
        .collect();
    let kept = kept.join(":");
    for t in TOOLS {
        assert!(
            !kept.split(':').any(|d| Path::new(d).join(t).exists()),
            "{t} still on PATH {kept}"
        );
    }
    kept
}

/// A command for the packaged binary: empty environment, PATH stripped.
fn packaged(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env_clear().env("PATH", path_without_toolchains());
    c
}

/// True when the ELF file has no PT_INTERP program header (no dynamic loader).
fn elf_is_static(bin: &Path) -> bool {
    let b = std::fs::read(bin).expect("read binary");
    assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", bin.display());
    assert_eq!(b[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let h = phoff + i * phentsize;
        u32::from_le_bytes(b[h..h + 4].try_into().expect("4 bytes")) != 3 // PT_INTERP
    })
}

/// `tailprobe --version` of `bin`, checked line by line; returns the commit.
fn check_version(bin: &Path) -> String {
    let v = out(packaged(bin).arg("--version"));
    eprintln!("{} --version:\n{v}", bin.display());
    let lines: Vec<&str> = v.lines().collect();
    assert_eq!(lines.len(), 4, "{v}");
    assert!(lines[0].starts_with("tailprobe "), "{v}");
    let commit = lines[1].strip_prefix("commit: ").expect("commit line");
    assert!(
        commit.len() >= 40 && commit[..40].bytes().all(|b| b.is_ascii_hexdigit()),
        "cargo xtask dist passes the git commit; got {commit:?}"
    );
    assert_eq!(lines[2], "target: x86_64-unknown-linux-musl", "{v}");
    let sha = lines[3]
        .strip_prefix("ebpf-object-sha256: ")
        .expect("sha line");
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha}"
    );
    commit.to_string()
}

/// Visible subcommands: each has its man page.
fn subcommands() -> Vec<String> {
    tailprobe::cli::Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

#[test]
fn dist_tarball_holds_static_binary_man_pages_and_completions() {
    let Some(d) = dist("dist_tarball_holds_static_binary_man_pages_and_completions") else {
        return;
    };
    let list = out(Command::new("tar").arg("-tzf").arg(&d.tarball));
    let top = d
        .tree
        .file_name()
        .and_then(|n| n.to_str())
        .expect("top dir");
    let has = |p: &str| list.lines().any(|l| l == format!("{top}/{p}"));
    let mut want = vec![
        "bin/tailprobe".to_string(),
        "completions/tailprobe.bash".into(),
        "completions/_tailprobe".into(),
        "completions/tailprobe.fish".into(),
        "man/man1/tailprobe.1.gz".into(),
    ];
    let subs = subcommands();
    assert!(subs.len() >= 10, "{subs:?}");
    want.extend(subs.iter().map(|s| format!("man/man1/tailprobe-{s}.1.gz")));
    for w in &want {
        assert!(has(w), "{w} missing from the tarball:\n{list}");
    }
    assert!(
        !list.contains("exec-gated"),
        "a hidden subcommand got a man page:\n{list}"
    );
    let bin = d.tree.join("bin/tailprobe");
    assert!(
        elf_is_static(&bin),
        "{} has a dynamic loader",
        bin.display()
    );
    check_version(&bin);
    let page = out(Command::new("gzip")
        .arg("-dc")
        .arg(d.tree.join("man/man1/tailprobe-record.1.gz")));
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("pid"), "record's page lacks --pid");
    let bash = std::fs::read_to_string(d.tree.join("completions/tailprobe.bash")).expect("bash");
    assert!(
        bash.contains("record") && bash.contains("complete"),
        "{bash}"
    );
    eprintln!(
        "tarball {}: {} entries, {} man pages, binary {} bytes",
        d.tarball.display(),
        list.lines().count(),
        list.lines().filter(|l| l.ends_with(".1.gz")).count(),
        std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0)
    );
}

/// dpkg -x into a scratch root (idempotent); the root.
fn deb_root(d: &Dist) -> PathBuf {
    let root = d.scratch.join("root");
    if !root.join("usr/bin/tailprobe").exists() {
        std::fs::create_dir_all(&root).expect("root");
        out(Command::new("dpkg").arg("-x").arg(&d.deb).arg(&root));
    }
    root
}

#[test]
fn dist_deb_contents_and_binary_from_a_scratch_root() {
    let Some(d) = dist("dist_deb_contents_and_binary_from_a_scratch_root") else {
        return;
    };
    let fields = out(Command::new("dpkg-deb").arg("-f").arg(&d.deb).args([
        "Package",
        "Architecture",
        "Depends",
    ]));
    assert!(fields.contains("Package: tailprobe"), "{fields}");
    assert!(fields.contains("Architecture: amd64"), "{fields}");
    let list = out(Command::new("dpkg-deb").arg("-c").arg(&d.deb));
    let mut want = vec![
        "./usr/bin/tailprobe".to_string(),
        "./usr/share/man/man1/tailprobe.1.gz".into(),
        "./usr/share/bash-completion/completions/tailprobe".into(),
        "./usr/share/zsh/vendor-completions/_tailprobe".into(),
        "./usr/share/fish/vendor_completions.d/tailprobe.fish".into(),
        "./usr/share/doc/tailprobe/copyright".into(),
    ];
    want.extend(
        subcommands()
            .iter()
            .map(|s| format!("./usr/share/man/man1/tailprobe-{s}.1.gz")),
    );
    for w in &want {
        assert!(
            list.lines().any(|l| l.ends_with(&format!(" {w}"))),
            "{w} missing from dpkg-deb -c:\n{list}"
        );
    }
    assert!(
        list.lines().all(|l| l.contains(" root/root ")),
        "files not owned by root in the .deb:\n{list}"
    );
    let root = deb_root(d);
    let bin = root.join("usr/bin/tailprobe");
    let from_deb = std::fs::read(&bin).expect("installed binary");
    let from_tar = std::fs::read(d.tree.join("bin/tailprobe")).expect("tarball binary");
    assert!(
        from_deb == from_tar,
        "the .deb and the tarball carry different binaries"
    );
    check_version(&bin);
    let help = out(packaged(&bin).arg("--help"));
    for s in subcommands() {
        assert!(help.contains(&s), "--help lacks {s}:\n{help}");
    }
    let record_help = out(packaged(&bin).args(["record", "--help"]));
    assert!(record_help.contains("--pid"), "{record_help}");
}

/// The postinst run as dpkg runs it for a `--root` install ($DPKG_ROOT):
/// group `tailprobe` created in that root, the binary root:tailprobe 0750,
/// the file capabilities set.
#[test]
fn root_deb_postinst_sets_group_mode_and_capabilities() {
    skip_unless_root!("root_deb_postinst_sets_group_mode_and_capabilities");
    let Some(d) = dist("root_deb_postinst_sets_group_mode_and_capabilities") else {
        return;
    };
    let root = deb_root(d);
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    for (f, line) in [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("group", "root:x:0:\n"),
        ("shadow", "root:*:19000:0:99999:7:::\n"),
        ("gshadow", "root:*::\n"),
    ] {
        std::fs::write(etc.join(f), line).expect("scratch /etc");
    }
    let ctrl = d.scratch.join("control");
    out(Command::new("dpkg-deb").arg("-e").arg(&d.deb).arg(&ctrl));
    let said = out(Command::new("sh")
        .arg(ctrl.join("postinst"))
        .arg("configure")
        .env("DPKG_ROOT", &root));
    eprintln!("postinst: {said}");
    let group = std::fs::read_to_string(etc.join("group")).expect("group");
    let gid: u32 = group
        .lines()
        .find_map(|l| {
            l.strip_prefix("tailprobe:x:")?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no tailprobe group in the scratch root:\n{group}"));
    let bin = root.join("usr/bin/tailprobe");
    let m = std::fs::metadata(&bin).expect("binary");
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, gid, 0o750));
    let caps = out(Command::new("getcap").arg(&bin));
    eprintln!("getcap: {caps}");
    // Each of the five when this process's bounding set has it (the
    // postinst leaves out the others: an exec would fail with EPERM).
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .expect("CapBnd");
    for (c, bit) in [
        ("cap_dac_read_search", 2),
        ("cap_sys_nice", 23),
        ("cap_sys_resource", 24),
        ("cap_perfmon", 38),
        ("cap_bpf", 39),
    ] {
        let bounded = bnd >> bit & 1 == 1;
        assert_eq!(
            caps.contains(c),
            bounded,
            "{c}: in the bounding set {bounded}, set on the file: {caps}"
        );
    }
    assert!(caps.contains("=ep"), "not effective+permitted: {caps}");
    // Root can still run it (a capability outside the bounding set would
    // make this exec fail with EPERM).
    check_version(&bin);
    assert!(!caps.contains("cap_sys_admin"), "{caps}");
}

/// The static binary from the .deb records two spinners sharing CPU 0 with
/// an empty environment and no toolchain on PATH; its figures agree with
/// schedstat and /proc status by record_sched's checks
/// (tailprobe_tests::spin2_agrees_with_schedstat: run-queue totals within
/// 5% + 2 ms, involuntary switches within 2% + 3).
#[test]
fn root_packaged_binary_records_like_schedstat() {
    skip_unless_root!("root_packaged_binary_records_like_schedstat");
    let Some(d) = dist("root_packaged_binary_records_like_schedstat") else {
        return;
    };
    if std::env::var("TAILPROBE_EXPECT_NO_TOOLCHAIN").is_ok_and(|v| v == "1") {
        // `cargo xtask vm-test --subset packaged` hides the host's
        // toolchains in its guest: none may be found anywhere usual.
        let mut places = vec![
            "/usr/local/bin".to_string(),
            "/usr/bin".into(),
            "/bin".into(),
            "/root/.cargo/bin".into(),
        ];
        places.extend(
            std::fs::read_dir("/usr/lib")
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
                .map(|e| e.path().join("bin").display().to_string()),
        );
        for dir in &places {
            for t in ["cargo", "rustc", "bpf-linker", "llc", "clang"] {
                let p = Path::new(dir).join(t);
                assert!(
                    !p.exists(),
                    "{} exists in a guest meant to have no toolchain",
                    p.display()
                );
            }
        }
    }
    let bin = deb_root(d).join("usr/bin/tailprobe");
    let spin_ms = 1500u64;
    let mut w = Workload::start(WORKLOAD, &["spin2", "0", &spin_ms.to_string()]);
    let mut cmd = packaged(&bin);
    cmd.args(["record", "--duration", "60s", "--json", "--pid"])
        .arg(w.pid().to_string());
    let rec = Recording::start_command(cmd);
    spin2_agrees_with_schedstat(&mut w, rec, spin_ms, "packaged");
}

/// The OCI archive: a valid layout whose blobs match their digests, one
/// image whose config runs /usr/bin/tailprobe and names the same commit,
/// and whose layer holds the same static binary as the tarball.
#[test]
fn dist_oci_image_holds_the_static_binary() {
    let Some(d) = dist("dist_oci_image_holds_the_static_binary") else {
        return;
    };
    let dir = d.scratch.join("oci");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("oci dir");
    out(Command::new("tar")
        .arg("-xf")
        .arg(&d.image)
        .arg("-C")
        .arg(&dir));
    let layout = std::fs::read_to_string(dir.join("oci-layout")).expect("oci-layout");
    assert!(layout.contains("imageLayoutVersion"), "{layout}");
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).expect("read json")).expect("json")
    };
    // A blob by digest, after checking that its sha256 is its name.
    let blob = |digest: &str| -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let p = dir.join("blobs/sha256").join(hex);
        let sum = out(Command::new("sha256sum").arg(&p));
        assert!(sum.starts_with(hex), "blob {hex} has sha256 {sum}");
        p
    };
    let index = json(&dir.join("index.json"));
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{index:#}");
    let manifest = json(&blob(manifests[0]["digest"].as_str().expect("digest")));
    let config = json(&blob(
        manifest["config"]["digest"].as_str().expect("config"),
    ));
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/tailprobe"]),
        "{config:#}"
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let commit = check_version(&d.tree.join("bin/tailprobe"));
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"], commit,
        "{config:#}"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "FROM scratch + one copy: {manifest:#}");
    let fs = dir.join("rootfs");
    std::fs::create_dir_all(&fs).expect("rootfs");
    out(Command::new("tar")
        .arg("-xf")
        .arg(blob(layers[0]["digest"].as_str().expect("layer")))
        .arg("-C")
        .arg(&fs));
    let in_image = std::fs::read(fs.join("usr/bin/tailprobe")).expect("binary in the layer");
    let from_tar = std::fs::read(d.tree.join("bin/tailprobe")).expect("tarball binary");
    assert!(
        in_image == from_tar,
        "the image's binary differs from the tarball's"
    );
    let mode = std::fs::metadata(fs.join("usr/bin/tailprobe"))
        .expect("mode")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "not executable in the image: {mode:o}");
    // Nothing but the binary (and its directories) in the image.
    let files = out(Command::new("find").arg(&fs).args(["-type", "f"]));
    assert_eq!(files.lines().count(), 1, "{files}");
}

/// What the guest of `cargo xtask vm-test --subset packaged` did before the
/// tests: booted systemd as PID 1, hid the host's toolchains and installed
/// the `.deb` with `dpkg -i`; it exports the installed binary's path here.
const INSTALLED_ENV: &str = "TAILPROBE_INSTALLED_BIN";

/// A transient systemd service, stopped (and its failed state reset) on drop.
struct Unit(String);

impl Drop for Unit {
    fn drop(&mut self) {
        let service = format!("{}.service", self.0);
        let _ = Command::new("systemctl").args(["stop", &service]).status();
        let _ = Command::new("systemctl")
            .args(["reset-failed", &service])
            .status();
    }
}

/// The main pid of a unit, once systemd has one (within `limit`).
fn unit_main_pid(service: &str, limit: std::time::Duration) -> u32 {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let pid = Command::new("systemctl")
            .args(["show", "--property", "MainPID", "--value", service])
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
            })
            .filter(|p| *p != 0);
        if let Some(p) = pid {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{service} has no main pid after {limit:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Issue 15's "done when", in a guest: the `.deb` installed with dpkg on a
/// machine with no cargo, rustc or clang, systemd as PID 1, two spinners
/// started as a transient unit (`systemd-run --unit`), and the installed
/// `tailprobe record --unit NAME` agreeing with the unit's threads'
/// schedstat as the host tests do (spin2_agrees_with_schedstat).
#[test]
fn root_installed_deb_records_a_systemd_unit_like_schedstat() {
    let name = "root_installed_deb_records_a_systemd_unit_like_schedstat";
    skip_unless_root!(name);
    let Some(bin) = std::env::var_os(INSTALLED_ENV).map(PathBuf::from) else {
        skip(
            name,
            "runs where the .deb is installed and systemd is PID 1: \
             `cargo xtask vm-test --subset unit` (docs/vm-test.md)",
        );
        return;
    };
    let comm = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    assert_eq!(comm.trim(), "systemd", "PID 1 is not systemd");
    assert!(
        Path::new("/run/systemd/system").is_dir(),
        "systemd is PID 1 but /run/systemd/system is missing"
    );
    // No toolchain, as the shell of the node's operator sees it: the
    // guest's own PATH, not one this test stripped.
    for tool in ["cargo", "rustc", "clang", "llc", "bpf-linker"] {
        let st = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .status()
            .expect("sh");
        assert!(!st.success(), "{tool} is on PATH in the no-toolchain guest");
    }
    let owner = out(Command::new("dpkg").args(["-S", &bin.display().to_string()]));
    assert!(
        owner.starts_with("tailprobe:"),
        "dpkg -S {}: {owner}",
        bin.display()
    );
    check_version(&bin);

    let unit = Unit(format!("tailprobe-deb-{}", std::process::id()));
    let service = format!("{}.service", unit.0);
    let spin_ms = 1500u64;
    let mut launch = Command::new("systemd-run");
    launch
        .args(["--pipe", "--quiet", "--collect", "--unit", &unit.0, "--"])
        .args([WORKLOAD, "spin2", "0", &spin_ms.to_string()]);
    let mut w = Workload::start_command(launch);
    let pid = unit_main_pid(&service, std::time::Duration::from_secs(10));
    w.set_pid(pid);
    for tid in &w.tids {
        assert!(
            Path::new(&format!("/proc/{pid}/task/{tid}")).exists(),
            "thread {tid} is not in the unit's main process {pid}"
        );
    }
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    assert!(
        cgroup.contains(&format!("/{service}")),
        "pid {pid} is not in {service}'s cgroup: {cgroup}"
    );
    let mut cmd = packaged(&bin);
    cmd.args(["record", "--duration", "60s", "--json", "--unit", &unit.0]);
    let rec = Recording::start_command(cmd);
    let report = spin2_agrees_with_schedstat(&mut w, rec, spin_ms, "installed --unit");
    assert_eq!(report["target"]["kind"], "unit", "{:#}", report["target"]);
    assert_eq!(report["target"]["spec"], service.as_str());
    let procs: Vec<u64> = report["target"]["processes"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_u64()).collect())
        .unwrap_or_default();
    assert!(procs.contains(&u64::from(pid)), "{:#}", report["target"]);
    eprintln!(
        "installed {} (dpkg: {}) recorded unit {service} (main pid {pid}, threads {:?})",
        bin.display(),
        owner.trim(),
        w.tids
    );
}
