//! The command line `user-service-call METHOD [JSON]` (also `user-service call`): sends one
//! RPC request and prints the reply envelope.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{Value, json};
use user_domain::Method;

use crate::client::Client;
use crate::config::{ClientConfig, ENVIRONMENT};

/// The help text of the command run as `prog` (`user-service-call`, `user-service call`).
pub fn help(prog: &str) -> String {
    let mut text = format!(
        "usage: {prog} METHOD [JSON]\n\
         \n\
         Sends one RPC request to user-service over RabbitMQ and prints the reply envelope\n\
         ({{\"status\": …, \"data\": …}} or {{\"status\": …, \"error\": …}}). JSON is the params object\n\
         (default {{}}), under the contract's names, e.g.\n\
         \x20 {prog} users.exists '{{\"id\": \"6f9619ff-8b86-4011-b42d-00c04fc964ff\"}}'\n\
         \x20 {prog} users.get '{{\"id\": \"…\", \"fields\": [\"name\", \"preferences.language\"]}}'\n\
         The request is sent once (no retry) with a fresh message_id, and waits 3 s for the reply.\n\
         Exit status: 0 for a reply below 400, 1 for an error reply or no reply, 2 for bad usage.\n\
         \n\
         Methods:\n"
    );
    for chunk in Method::ALL.chunks(3) {
        let names: Vec<&str> = chunk.iter().map(|m| m.as_str()).collect();
        text.push_str(&format!("  {}\n", names.join("  ")));
    }
    text.push_str("\nEnvironment:\n");
    for (name, meaning) in ENVIRONMENT {
        text.push_str(&format!("  {name:<24} {meaning}\n"));
    }
    text.push_str(
        "With neither key nor secret no credentials are sent: a service in local open mode\n\
         accepts that from a loopback broker.",
    );
    text
}

/// Runs the command with `args` (after the program name), its configuration from the
/// process environment; prints to stdout and stderr.
pub fn main(prog: &str, args: &[String]) -> ExitCode {
    let code = run(
        prog,
        args,
        |name| std::env::var(name).ok(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    ExitCode::from(code)
}

/// [`main`] with the environment and the outputs given; returns the exit status.
pub fn run(
    prog: &str,
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    // Writes to a closed pipe are not worth a panic; the exit status still tells.
    match args {
        [flag] if matches!(flag.as_str(), "-h" | "--help" | "help") => {
            let _ = writeln!(out, "{}", help(prog));
            0
        }
        [method] | [method, _] if !method.starts_with('-') => {
            let params = match args.get(1).map(|p| serde_json::from_str::<Value>(p)) {
                None => json!({}),
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    let _ = writeln!(err, "{prog}: the params are not JSON: {e}");
                    return 2;
                }
            };
            call(
                prog,
                method,
                &params,
                ClientConfig::from_lookup(env),
                out,
                err,
            )
        }
        _ => {
            let _ = writeln!(err, "{}", help(prog));
            2
        }
    }
}

fn call(
    prog: &str,
    method: &str,
    params: &Value,
    config: ClientConfig,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "{prog}: cannot start the runtime: {e}");
            return 1;
        }
    };
    let reply = runtime.block_on(async {
        let client = Client::connect(config).await?;
        client.request(method, params).await
    });
    match reply {
        Ok(reply) => {
            let text = serde_json::to_string_pretty(&reply).unwrap_or_else(|_| reply.to_string());
            let _ = writeln!(out, "{text}");
            let failed = reply["status"].as_u64().is_none_or(|s| s >= 400);
            u8::from(failed)
        }
        Err(e) => {
            let _ = writeln!(err, "{prog}: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> (u8, String, String) {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run("user-service-call", &args, |_| None, &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    #[test]
    fn help_names_every_method_and_variable() {
        for flag in ["--help", "-h", "help"] {
            let (code, out, _) = run_args(&[flag]);
            assert_eq!(code, 0);
            assert!(out.starts_with("usage: user-service-call METHOD [JSON]"));
            for m in Method::ALL {
                assert!(out.contains(m.as_str()), "{m} missing");
            }
            for (name, _) in ENVIRONMENT {
                assert!(out.contains(name), "{name} missing");
            }
        }
    }

    #[test]
    fn bad_usage_exits_2_without_calling() {
        assert_eq!(run_args(&[]).0, 2);
        assert_eq!(run_args(&["a", "{}", "extra"]).0, 2);
        assert_eq!(run_args(&["--bogus"]).0, 2);
        let (code, out, err) = run_args(&["users.get", "{oops"]);
        assert_eq!((code, out.as_str()), (2, ""));
        assert!(err.contains("not JSON"), "{err}");
    }
}
