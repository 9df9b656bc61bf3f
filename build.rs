//! Man pages and shell completions, generated here from the command line's
//! own definition (src/cli/args.rs) and embedded as text: `repeatr man` and
//! `repeatr completions` then print what the parser accepts, and the
//! generators (clap_mangen, clap_complete, ~180 KB of code) stay out of
//! the runner that every waiting job keeps resident.

use std::path::PathBuf;

use clap::CommandFactory;

#[allow(dead_code)]
#[path = "src/cli/args.rs"]
mod args;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=src/cli/args.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
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
