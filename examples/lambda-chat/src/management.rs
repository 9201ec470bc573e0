//! The `@connections` client, configured as a Lambda function finds things on AWS.

use std::sync::OnceLock;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::{
    BehaviorVersion, Credentials, Region, SharedHttpClient,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// One HTTP client (and connection pool) per process.
fn http_client() -> SharedHttpClient {
    static CLIENT: OnceLock<SharedHttpClient> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                .build_https()
        })
        .clone()
}

/// The management endpoint for an event: `AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI` when set
/// (the variable the AWS SDKs' shared configuration reads), else the API's own
/// `https://{domainName}/{stage}`, as the AWS samples build it.
pub fn endpoint(request: &ApiGatewayWebsocketProxyRequest) -> String {
    match std::env::var("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let rc = &request.request_context;
            format!(
                "https://{}/{}",
                rc.domain_name.as_deref().unwrap_or_default(),
                rc.stage.as_deref().unwrap_or_default()
            )
        }
    }
}

/// A client for `endpoint`, with the region and credentials Lambda puts in the environment.
pub fn client(endpoint: &str) -> Client {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let token = std::env::var("AWS_SESSION_TOKEN").ok();
    let credentials = Credentials::new(
        var("AWS_ACCESS_KEY_ID"),
        var("AWS_SECRET_ACCESS_KEY"),
        token,
        None,
        "environment",
    );
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(var("AWS_REGION")))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .http_client(http_client())
        .build();
    Client::from_conf(config)
}
