//! The one client for outgoing calls (CIBA callbacks, webhooks, Slack, Teams, Web Push): no
//! redirects, timeouts, and no non-public addresses (checked on the resolved address) unless
//! the operator allows them.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::settings::OutboundSettings;

/// Whether an address is on the public internet (not loopback, private, link-local,
/// carrier-grade NAT, documentation, multicast or otherwise reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                || first == 0x0064)
        }
    }
}

/// Resolves host names and keeps only the addresses callbacks may reach.
#[derive(Debug, Clone)]
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (outbound.allow_private_networks is off)"
                )
                .into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client of every outgoing call.
pub fn outbound_client(settings: &OutboundSettings) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(StdDuration::from_millis(settings.connect_timeout_ms))
        .timeout(StdDuration::from_millis(settings.timeout_ms))
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: settings.allow_private_networks,
        }))
        .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Refuses literal non-public addresses (the resolver only sees host names).
pub fn check_target(target: &str, allow_private: bool) -> std::result::Result<(), String> {
    let url = url::Url::parse(target).map_err(|e| format!("bad endpoint URL: {e}"))?;
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("the endpoint has no host".into()),
    };
    match ip {
        Some(ip) if !allow_private && !is_public(ip) => Err(format!(
            "{ip} is not a public address (outbound.allow_private_networks is off)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_private_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "2606:4700::1111", "1.1.1.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        assert!(check_target("http://127.0.0.1:9/cb", false).is_err());
        assert!(check_target("http://[::1]:9/cb", false).is_err());
        assert!(check_target("http://127.0.0.1:9/cb", true).is_ok());
        assert!(check_target("https://client.example.com/cb", false).is_ok());
    }
}
