//! README's table of `sluice serve` settings, checked against their one
//! declaration ([`super::ServeArgs`]): every flag has a row with its
//! environment variable, file key and default, and every row names a flag
//! that exists.

use clap::{Args, Command};

use super::ServeArgs;

/// README's rows for the `[serve]` settings: flags, envs, keys, default.
fn readme_rows() -> Vec<[String; 4]> {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("`sluice serve` (section `[serve]`):")
        .expect("README has the [serve] table");
    readme[start..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter(|line| line.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect();
            [
                cells[0].clone(),
                cells[1].clone(),
                cells[2].clone(),
                cells[3].clone(),
            ]
        })
        .collect()
}

/// The `[default: …]` a help text ends with, if any.
fn declared_default(help: &str) -> Option<String> {
    let start = help.find("[default: ")? + "[default: ".len();
    let end = help[start..].find(']')? + start;
    Some(help[start..end].to_string())
}

/// A README default cell as its words: backticks and a parenthesized gloss
/// (`4194304` (4 MiB)) dropped.
fn readme_default(cell: &str) -> String {
    let text = cell.replace('`', "");
    match text.find(" (") {
        Some(gloss) => text[..gloss].to_string(),
        None => text,
    }
}

#[test]
fn readme_lists_every_serve_setting_as_declared() {
    let command = ServeArgs::augment_args(Command::new("serve"));
    let rows = readme_rows();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long.starts_with("cluster-tls-") {
            // In the file under `[cluster]`, documented with it.
            continue;
        }
        let flag = format!("`--{long}");
        let row = rows
            .iter()
            .find(|row| row[0].contains(&flag))
            .unwrap_or_else(|| panic!("README's [serve] table has no row for --{long}"));
        let env = arg.get_env().map(|env| env.to_string_lossy().into_owned());
        let env = env.unwrap_or_else(|| panic!("--{long} has no environment variable"));
        assert!(row[1].contains(&format!("`{env}`")), "--{long}: {row:?}");
        let key = arg.get_id().as_str().replace('_', "-");
        if long != "config" {
            assert!(row[2].contains(&format!("`{key}`")), "--{long}: {row:?}");
        }
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let readme = readme_default(&row[3]);
        match declared_default(&help) {
            Some(default) => assert!(
                !readme.is_empty() && default.contains(&readme),
                "--{long}: README's default {readme:?} is not in its declaration {default:?}"
            ),
            None if arg.get_action().takes_values() => assert!(
                readme.is_empty() || row[0].contains(", `--"),
                "--{long}: README gives a default {readme:?} it does not declare"
            ),
            None => assert_eq!(readme, "off", "--{long} is a switch"),
        }
    }
    for row in &rows {
        for flag in row[0].split(", ") {
            let long = flag
                .trim_matches('`')
                .trim_start_matches("--")
                .split(' ')
                .next()
                .unwrap_or_default();
            assert!(
                command
                    .get_arguments()
                    .any(|arg| arg.get_long() == Some(long)),
                "README lists --{long}, which `sluice serve` does not have"
            );
        }
    }
}
