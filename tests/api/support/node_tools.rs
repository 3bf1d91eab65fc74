//! The npm folders under `scripts/` whose tools some tests run against a live server (the
//! GraphQL-over-HTTP audit, graphql-codegen and Inspector, Apollo Client): whether `node` and
//! a folder's packages are installed (a test skips with a message when not; .ci/run installs
//! them), and running the folder's programs with a time limit.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

/// One installed folder, `scripts/<name>`.
pub struct NodeTools {
    pub directory: PathBuf,
}

impl NodeTools {
    /// The folder `scripts/<name>` when `node` runs and every one of `packages` is installed
    /// there; otherwise `None`, after saying why on stderr.
    pub fn installed(name: &str, packages: &[&str]) -> Option<NodeTools> {
        let node = std::process::Command::new("node").arg("--version").output();
        if !node.is_ok_and(|output| output.status.success()) {
            eprintln!("skipped: `node` is not installed (scripts/{name} needs Node.js 18+)");
            return None;
        }
        let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(name);
        let installed = packages.iter().all(|package| {
            directory
                .join("node_modules")
                .join(package)
                .join("package.json")
                .exists()
        });
        if !installed {
            eprintln!("skipped: run `npm ci --prefix scripts/{name}` to install {packages:?}");
            return None;
        }
        Some(NodeTools { directory })
    }

    /// Runs `program` (a `node_modules/.bin` name, or `node` itself) in the folder, for two
    /// minutes at most.
    pub async fn run(&self, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let executable = if program == "node" {
            PathBuf::from("node")
        } else {
            self.directory.join("node_modules/.bin").join(program)
        };
        let mut command = tokio::process::Command::new(executable);
        command
            .args(args)
            .envs(env.iter().copied())
            .current_dir(&self.directory)
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .unwrap_or_else(|_| panic!("{program} finishes within two minutes"))
            .unwrap_or_else(|error| panic!("{program} runs: {error}"))
    }

    /// Runs `node script args...` and reads what it prints as one JSON value.
    pub async fn run_json(&self, script: &str, args: &[&str]) -> Value {
        let mut node_args = vec![script];
        node_args.extend_from_slice(args);
        let output = self.run("node", &node_args, &[]).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
            panic!(
                "{script} prints JSON ({error}): {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }
}
