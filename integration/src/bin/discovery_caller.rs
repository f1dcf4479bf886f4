//! Asks a gateway socket what it serves, as whichever user runs it: the routing and
//! discovery tests run it under uids a plugin's `callers` does or does not admit (the
//! stock Python clients cannot run as another user where the interpreter lives under
//! root's home).
//!
//! `discovery_caller SOCKET list`: the services reflection lists, as one JSON array.
//! `discovery_caller SOCKET check SERVICE`: its health (`SERVING`...), or `error CODE`.

use plugin_integration::connect;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || anyhow::anyhow!("usage: discovery_caller SOCKET list | discovery_caller SOCKET check SERVICE");
    let socket = args.first().ok_or_else(usage)?;
    let channel = connect(socket.as_ref()).await?;
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("list"), None) => {
            let ask = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut answers = ServerReflectionClient::new(channel)
                .server_reflection_info(tokio_stream::once(ask))
                .await?
                .into_inner();
            let answer = answers.message().await?.ok_or_else(|| anyhow::anyhow!("no answer to ListServices"))?;
            let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
                anyhow::bail!("not a list of services: {answer:?}");
            };
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            println!("{}", serde_json::to_string(&names)?);
        }
        (Some("check"), Some(service)) => {
            match HealthClient::new(channel).check(HealthCheckRequest { service: service.clone() }).await {
                Ok(answer) => println!("{}", answer.into_inner().status().as_str_name()),
                Err(status) => println!("error {}", status_name(status.code())),
            }
        }
        _ => return Err(usage()),
    }
    Ok(())
}

/// The code as gRPC spells it (`NOT_FOUND`), as the Python client prints it.
fn status_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}
