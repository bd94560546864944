//! `user-service-call METHOD [JSON]`: one RPC request to user-service; `--help` for more.
//! Install without the server: `cargo install --path client`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    user_service_client::cli::main("user-service-call", &args)
}
