//! deploy/: the systemd unit passes `systemd-analyze verify`, the Debian package installs on
//! this machine (service user, directories, conffile, check-config on the installed example)
//! and purges clean, and the container image builds and runs `mailferry --version` as its
//! own user.
//!
//! They need root and the tools `scripts/install-deps.sh` installs (systemd's
//! `systemd-analyze`, cargo-deb, dpkg): skipped without them, compulsory under
//! `scripts/test.sh` (`MAILFERRY_E2E=1`). The package is built from the binary the tests
//! built (`cargo deb --no-build --profile dev`): packaging is what is tested, not the
//! optimiser; a release package is `cargo deb`.

mod support;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::{E2E_VAR, mailferry_bin, skip_e2e, user_ids};

/// The unit as the package installs it.
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/mailferry.service");
const PACKAGE: &str = "mailferry";

/// True when these tests must return at once (see the top); panics under `MAILFERRY_E2E=1`
/// when a tool is missing.
fn skip(tools: &[&str]) -> bool {
    if skip_e2e() {
        return true;
    }
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !tool_present(tool))
        .collect();
    if missing.is_empty() {
        return false;
    }
    let message = format!(
        "deploy tests need {} (scripts/install-deps.sh installs them)",
        missing.join(", ")
    );
    if std::env::var(E2E_VAR).as_deref() == Ok("1") {
        panic!("{E2E_VAR}=1 but {message}");
    }
    eprintln!("skipping: {message}");
    true
}

fn tool_present(tool: &str) -> bool {
    let (program, args): (&str, &[&str]) = match tool {
        "cargo-deb" => (cargo(), &["deb", "--version"]),
        other => (other, &["--version"]),
    };
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The cargo running the tests (cargo-deb is its subcommand).
fn cargo() -> &'static str {
    option_env!("CARGO").unwrap_or("cargo")
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A file tree for `systemd-analyze --root`: the unit, the binary it starts (the one the
/// tests built, hard-linked), `/bin/kill` of ExecReload and systemd's own units it refers to.
fn unit_root() -> tempfile::TempDir {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let r = root.path();
    for dir in ["usr/bin", "bin", "etc/systemd/system", "usr/lib/systemd"] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    let binary = r.join("usr/bin/mailferry");
    if std::fs::hard_link(mailferry_bin(), &binary).is_err() {
        std::fs::copy(mailferry_bin(), &binary).unwrap();
    }
    std::fs::copy("/bin/kill", r.join("bin/kill")).unwrap();
    std::fs::copy(UNIT, r.join("etc/systemd/system/mailferry.service")).unwrap();
    let out = run(
        "cp",
        &[
            "-a",
            "/lib/systemd/system",
            r.join("usr/lib/systemd").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    root
}

#[test]
fn the_unit_passes_systemd_analyze_verify_without_a_warning() {
    if skip(&["systemd-analyze"]) {
        return;
    }
    let root = unit_root();
    let unit = root.path().join("etc/systemd/system/mailferry.service");
    let out = run(
        "systemd-analyze",
        &[
            "verify",
            &format!("--root={}", root.path().display()),
            unit.to_str().unwrap(),
        ],
    );
    // verify exits 0 on an unknown key or a bad value and only warns: both count here.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );
}

#[test]
fn the_unit_is_the_hardened_one_the_issue_asks_for() {
    if skip(&["systemd-analyze"]) {
        return;
    }
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for wanted in [
        "User=mailferry",
        "StateDirectory=mailferry",
        "ConfigurationDirectory=mailferry",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "ExecStart=/usr/bin/mailferry run --config /etc/mailferry/mailferry.yaml",
        "Restart=on-failure",
    ] {
        assert!(lines.contains(&wanted), "the unit lacks {wanted:?}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("ExecReload=")),
        "the unit has no ExecReload"
    );

    // systemd's own judgement of the sandbox: 0 (locked down) .. 10 (exposed); "OK" is < 2.
    let root = unit_root();
    let out = run(
        "systemd-analyze",
        &[
            "security",
            "--offline=yes",
            &format!("--root={}", root.path().display()),
            "--no-pager",
            "mailferry.service",
        ],
    );
    let report = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for mailferry.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {}", text(&out)));
    assert!(exposure < 2.0, "exposure {exposure}:\n{report}");
}

/// Serialises the package tests of every worktree on this machine: one `mailferry` package
/// and one `mailferry` user exist at a time.
fn machine_lock() -> File {
    let lock = File::create("/run/lock/mailferry-deploy-test.lock").unwrap();
    lock.lock().unwrap();
    lock
}

/// dpkg, waiting while another apt or dpkg holds its lock.
fn dpkg(args: &[&str]) -> Output {
    for _ in 0..120 {
        let out = run("dpkg", args);
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("lock") {
            return out;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    run("dpkg", args)
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", PACKAGE])
        .stdout
        .starts_with(b"install ok installed")
}

/// Purges the package when dropped: the machine stays as it was, whatever failed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let out = dpkg(&["--purge", PACKAGE]);
        if !out.status.success() {
            eprintln!("dpkg --purge {PACKAGE}: {}", text(&out));
        }
    }
}

/// The installed example checked as the service user (the daemon's view of the file).
fn check_config_as_service_user(password: Option<&str>) -> Output {
    let mut args = vec!["-u", "mailferry", "--", "env"];
    let assignment = password.map(|p| format!("MAILFERRY_CATCHALL_PASSWORD={p}"));
    if let Some(a) = &assignment {
        args.push(a);
    }
    args.extend([
        "/usr/bin/mailferry",
        "check-config",
        "--config",
        "/etc/mailferry/mailferry.yaml",
    ]);
    run("runuser", &args)
}

fn build_deb(out_dir: &Path) -> PathBuf {
    let bin = mailferry_bin();
    // <target>/debug/mailferry: cargo-deb finds it under the same target directory.
    let target_dir = bin.parent().and_then(Path::parent).unwrap();
    let out = Command::new(cargo())
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "--manifest-path",
        ])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--output")
        .arg(out_dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo deb: {}", text(&out));
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let deb = PathBuf::from(deb.lines().last().unwrap_or_default());
    assert!(deb.is_file(), "cargo deb made no package: {}", text(&out));
    deb
}

#[test]
fn the_package_installs_creates_its_user_checks_its_example_and_purges_clean() {
    if skip(&["dpkg", "cargo-deb", "systemd-analyze", "runuser"]) {
        return;
    }
    let _lock = machine_lock();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let deb = build_deb(dir.path());
    let deb = deb.to_str().unwrap();

    // What the package says of itself: the configuration is a conffile, the unit is there.
    let contents =
        String::from_utf8_lossy(&run("dpkg-deb", &["--contents", deb]).stdout).into_owned();
    for path in [
        "./usr/bin/mailferry",
        "./usr/lib/systemd/system/mailferry.service",
        "./etc/mailferry/mailferry.yaml",
    ] {
        assert!(
            contents.contains(path),
            "{path} not in the package:\n{contents}"
        );
    }
    let conffiles = run("dpkg-deb", &["--info", deb, "conffiles"]);
    assert_eq!(
        String::from_utf8_lossy(&conffiles.stdout).trim(),
        "/etc/mailferry/mailferry.yaml"
    );

    // A package left by an earlier run that died goes first.
    if installed() {
        let out = dpkg(&["--purge", PACKAGE]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let purge = Purge;
    let out = dpkg(&["-i", deb]);
    assert!(out.status.success(), "dpkg -i: {}", text(&out));

    assert!(
        user_ids("mailferry").is_some(),
        "postinst made no mailferry user"
    );
    let shell = String::from_utf8_lossy(&run("getent", &["passwd", "mailferry"]).stdout)
        .trim()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(shell, "/usr/sbin/nologin");
    let uid = |path: &str| std::fs::metadata(path).unwrap();
    let user = user_ids("mailferry").expect("the mailferry user");
    let state = uid("/var/lib/mailferry");
    assert_eq!((state.uid(), state.mode() & 0o777), (user.0, 0o700));
    let config = uid("/etc/mailferry/mailferry.yaml");
    assert_eq!(
        (config.uid(), config.gid(), config.mode() & 0o777),
        (0, user.1, 0o640)
    );
    // Installed, not enabled: the administrator enables it once the file is edited.
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/mailferry.service").exists());
    let out = run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/mailferry.service"],
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "the installed unit: {}",
        text(&out)
    );

    // The example as installed: all that is left to fill in is the password it names.
    let out = check_config_as_service_user(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr.contains("MAILFERRY_CATCHALL_PASSWORD is not set")
            && stderr.contains("1 problem(s) found"),
        "{}",
        text(&out)
    );
    let out = check_config_as_service_user(Some("x"));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(": ok ("),
        "{}",
        text(&out)
    );

    // An upgrade (the same package again) keeps the administrator's edit and the modes.
    let edited = std::fs::read_to_string("/etc/mailferry/mailferry.yaml").unwrap()
        + "# edited by the administrator\n";
    std::fs::write("/etc/mailferry/mailferry.yaml", &edited).unwrap();
    let out = dpkg(&["-i", deb]);
    assert!(out.status.success(), "dpkg -i again: {}", text(&out));
    assert_eq!(
        std::fs::read_to_string("/etc/mailferry/mailferry.yaml").unwrap(),
        edited
    );
    let config = uid("/etc/mailferry/mailferry.yaml");
    assert_eq!((config.gid(), config.mode() & 0o777), (user.1, 0o640));

    drop(purge);
    assert!(!installed(), "still installed after purge");
    for path in [
        "/usr/bin/mailferry",
        "/etc/mailferry",
        "/var/lib/mailferry",
        "/lib/systemd/system/mailferry.service",
    ] {
        assert!(!Path::new(path).exists(), "{path} is left after purge");
    }
    assert!(
        user_ids("mailferry").is_none(),
        "the user is left after purge"
    );
    let overrides =
        String::from_utf8_lossy(&run("dpkg-statoverride", &["--list"]).stdout).into_owned();
    assert!(!overrides.contains("/etc/mailferry"), "{overrides}");
}

#[test]
fn the_container_image_builds_and_runs_as_its_own_user() {
    if skip(&["unshare", "chroot", "sha256sum"]) {
        return;
    }
    let out_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/container/build.sh"
    ))
    .arg("--binary")
    .arg(mailferry_bin())
    .arg("--out")
    .arg(out_dir.path())
    .args(["--engine", "chroot"])
    .output()
    .unwrap();
    let report = text(&out);
    assert!(out.status.success(), "build.sh: {report}");
    // Run inside the image, as its user: the version, and the example it ships loads.
    let version = format!("mailferry {}", env!("CARGO_PKG_VERSION"));
    assert!(report.contains(&version), "{report}");
    assert!(
        report.contains("/etc/mailferry/mailferry.yaml: ok ("),
        "{report}"
    );

    // The OCI layout: index -> manifest -> config and layer, each blob its own SHA-256.
    let oci = out_dir.path().join("oci");
    let blob = |digest: &str| -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(oci.join("blobs/sha256").join(hex)).unwrap();
        let actual = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let actual: String = actual.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(actual, hex, "blob {digest} does not hash to its name");
        bytes
    };
    let json = |bytes: &[u8]| -> serde_json::Value { serde_json::from_slice(bytes).unwrap() };
    let index = json(&std::fs::read(oci.join("index.json")).unwrap());
    let manifest = json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = json(&blob(manifest["config"]["digest"].as_str().unwrap()));
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    blob(layer);
    assert_eq!(config["rootfs"]["diff_ids"][0].as_str(), Some(layer));
    let user = config["config"]["User"].as_str().unwrap();
    assert!(
        !user.is_empty() && !user.starts_with("0:") && user != "0" && user != "root",
        "the image runs as {user:?}"
    );
    assert_eq!(
        config["config"]["Entrypoint"][0].as_str(),
        Some("/usr/bin/mailferry")
    );
    // The Containerfile names the same user.
    let containerfile = std::fs::read_to_string(out_dir.path().join("Containerfile")).unwrap();
    assert!(
        containerfile
            .lines()
            .any(|l| l.trim() == format!("USER {user}")),
        "{containerfile}"
    );
}
