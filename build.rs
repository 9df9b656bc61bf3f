//! Man pages and shell completions, generated here from the command line's
//! own definition (src/cli/args.rs) and embedded as text: `repeatr man` and
//! `repeatr completions` then print what the parser accepts, and the
//! generators (clap_mangen, clap_complete, ~180 KB of code) stay out of
//! the runner that every waiting job keeps resident.
//!
//! And docker's default seccomp profile, compiled here for the target
//! (src/container/seccomp.rs), so that a job's start only hands the kernel
//! a ready program.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

#[allow(dead_code)]
#[path = "src/cli/args.rs"]
mod args;

#[allow(dead_code)]
#[path = "src/container/seccomp/bpf.rs"]
mod bpf;
#[allow(dead_code)]
#[path = "src/cbpf.rs"]
mod cbpf;
#[allow(dead_code)]
#[path = "src/container/seccomp/profile.rs"]
mod profile;
#[allow(dead_code)]
#[path = "src/container/seccomp/syscalls.rs"]
mod syscalls;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=src/cli/args.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    seccomp_default(&out)?;
    let mut cmd = args::Cli::command();
    clap_complete::generate_to(clap_complete::Shell::Bash, &mut cmd, "repeatr", &out)?;
    clap_complete::generate_to(clap_complete::Shell::Zsh, &mut cmd, "repeatr", &out)?;
    clap_complete::generate_to(clap_complete::Shell::Fish, &mut cmd, "repeatr", &out)?;

    // One page per command (repeatr.1, repeatr-run.1, ...), and an index
    // of them for `repeatr man --dir`.
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(cmd, &man)?;
    // clap's implicit `help` subcommand gets pages of its own (repeatr-help-run.1, ...):
    // they only repeat the others.
    let mut pages: Vec<String> = std::fs::read_dir(&man)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| !n.as_ref().is_ok_and(|n| n.starts_with("repeatr-help")))
        .collect::<Result<_, _>>()?;
    pages.sort();
    let index: String = pages
        .iter()
        .map(|p| format!("    ({p:?}, include_str!(concat!(env!(\"OUT_DIR\"), \"/man/{p}\"))),\n"))
        .collect();
    std::fs::write(out.join("man_pages.rs"), format!("&[\n{index}]\n"))?;
    Ok(())
}

/// The job capability sets, as far as docker's default profile looks at
/// them, whose filters are compiled here: none (a formula's `routine`),
/// the default set's (of which the profile names CAP_SYS_CHROOT only: a
/// unit test holds that), and every one the profile names (`sysad`,
/// `--cap-add ALL`). Any other set is compiled by the runner, on the host.
const PRECOMPILED: [&[&str]; 3] = [&[], &["CAP_SYS_CHROOT"], &["*"]];

/// `seccomp_default.rs`: docker's default profile compiled for the target
/// architecture, once per set of `PRECOMPILED`; and the profile itself,
/// minified, for the runner to compile for other sets.
fn seccomp_default(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=src/container/seccomp");
    println!("cargo::rerun-if-changed=src/cbpf.rs");
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH")?;
    let arch = syscalls::Arch::by_target(&target_arch)
        .ok_or_else(|| format!("seccomp: no syscall table for {target_arch} (x86_64 and aarch64 have one)"))?;
    let json = std::fs::read_to_string("src/container/seccomp/docker-default.json")?;
    let named = profile::caps_named(&json).map_err(|e| format!("docker-default.json: {e}"))?;
    let mut text = format!(
        "/// The capabilities docker's default profile has conditions on.\nconst NAMED_CAPS: &[&str] = &{named:?};\n\n\
         /// Filters compiled by build.rs, each for a job holding exactly\n\
         /// these of `NAMED_CAPS`.\nstatic PRECOMPILED: &[(&[&str], &[libc::sock_filter])] = &[\n"
    );
    for held in PRECOMPILED {
        let held: Vec<String> = match held {
            ["*"] => named.clone(),
            some => some.iter().map(|c| c.to_string()).collect(),
        };
        let target = profile::Target { arch, caps: &held, kernel: profile::OLDEST_KERNEL };
        let compiled = profile::compile(&json, &target).map_err(|e| format!("docker-default.json: {e}"))?;
        text += &format!("    (&{held:?}, &[\n");
        for i in compiled.program {
            text += &format!(
                "        libc::sock_filter {{ code: {:#06x}, jt: {}, jf: {}, k: {:#010x} }},\n",
                i.code, i.jt, i.jf, i.k
            );
        }
        text += "    ]),\n";
    }
    text += "];\n";
    std::fs::write(out.join("seccomp_default.rs"), text)?;
    let minified: serde_json::Value = serde_json::from_str(&json)?;
    std::fs::write(out.join("docker-default.min.json"), minified.to_string())?;
    Ok(())
}
