//! The one client for outgoing calls (CIBA callbacks, webhooks, Slack, Teams, Web Push): no
//! redirects, no proxies from the environment, timeouts, https only, and no non-public
//! addresses (checked on the resolved address, at every connection) unless the operator allows
//! them.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use countersign_core::Error;
use countersign_proto::ErrorCode;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::settings::OutboundSettings;

/// Whether an address is on the public internet (not loopback, private, link-local,
/// carrier-grade NAT, documentation, multicast or otherwise reserved). IPv6 addresses that
/// carry an IPv4 address (mapped, NAT64) are judged by it; tunnels whose far end cannot be
/// judged (6to4, Teredo) and deprecated forms (site-local, IPv4-compatible) are refused.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
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
        || (a == 192 && b == 0 && c == 0)
        // 6to4 relay anycast (RFC 7526).
        || (a == 192 && b == 88 && c == 99)
        || (a == 198 && (18..20).contains(&b)))
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    // ::ffff:0:0/96, IPv4-mapped.
    if let Some(v4) = v6.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // 64:ff9b::/96, the well-known NAT64 prefix: the IPv4 address it reaches decides.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let o = v6.octets();
        return is_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    let first = s[0];
    !(v6.is_loopback()
        || v6.is_unspecified()
        // ::/96, IPv4-compatible (deprecated), and the rest of ::/8 that is reserved.
        || (first == 0)
        // 64:ff9b:1::/48 (local-use NAT64) and the rest of 0064::/16.
        || first == 0x0064
        // 100::/64, discard-only.
        || (first == 0x0100 && s[1..4] == [0, 0, 0])
        // 2001::/23: IETF protocol assignments, Teredo (2001::/32) among them.
        || (first == 0x2001 && s[1] < 0x0200)
        // 2001:db8::/32 and 3fff::/20: documentation.
        || (first == 0x2001 && s[1] == 0x0db8)
        || (first == 0x3fff && s[1] < 0x1000)
        // 2002::/16: 6to4.
        || first == 0x2002
        // 5f00::/16: segment routing identifiers.
        || first == 0x5f00
        // fc00::/7 unique-local, fe80::/10 link-local, fec0::/10 site-local, ff00::/8 multicast.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || v6.is_multicast())
}

/// Resolves host names and keeps only the addresses callbacks may reach, so a name that
/// resolves to a private address (DNS rebinding included) is never connected to.
#[derive(Debug, Clone)]
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = reachable_addresses(name.as_str(), allow_private).await?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The addresses of `host` an outgoing call may connect to: the public ones, or all of them
/// when `allow_private`; an error when none is left.
pub async fn reachable_addresses(
    host: &str,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await?
        .filter(|a| allow_private || is_public(a.ip()))
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "{host} resolves to no public address (outbound.allow_private_networks is off)"
        )
        .into());
    }
    Ok(addrs)
}

/// The HTTP client of every outgoing call. Proxy variables (`HTTPS_PROXY`, …) are ignored:
/// through a proxy, the address checks would judge the proxy, not the destination.
pub fn outbound_client(settings: &OutboundSettings) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .https_only(!settings.allow_http)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(StdDuration::from_millis(settings.connect_timeout_ms))
        .timeout(StdDuration::from_millis(settings.timeout_ms))
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: settings.allow_private_networks,
        }))
        .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Refuses an endpoint the operator does not allow: not https (unless `allow_http`), or a
/// literal non-public address (unless `allow_private_networks`; host names are checked when
/// they resolve).
pub fn check_target(target: &str, rules: &OutboundSettings) -> std::result::Result<(), String> {
    let url = url::Url::parse(target).map_err(|e| format!("bad endpoint URL: {e}"))?;
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("the endpoint has no host".into()),
    };
    if let Some(ip) = ip
        && !rules.allow_private_networks
        && !is_public(ip)
    {
        return Err(format!(
            "{ip} is not a public address (outbound.allow_private_networks is off)"
        ));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if rules.allow_http => Ok(()),
        "http" => Err("the endpoint must use https (outbound.allow_http is off)".into()),
        other => Err(format!("the endpoint must use https, not {other}")),
    }
}

/// [`check_target`] for an endpoint being registered: a 400 `endpoint_not_allowed` naming
/// the field.
pub fn check_registration(
    field: &str,
    target: &str,
    rules: &OutboundSettings,
) -> countersign_core::Result<()> {
    check_target(target, rules)
        .map_err(|why| Error::coded(ErrorCode::EndpointNotAllowed, format!("`{field}`: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow_private_networks: bool, allow_http: bool) -> OutboundSettings {
        OutboundSettings {
            allow_private_networks,
            allow_http,
            ..OutboundSettings::default()
        }
    }

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
            "192.88.99.1",
            "::1",
            "::",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "ff0e::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "2606:4700::1111",
            "1.1.1.1",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn special_ipv6_ranges_are_refused() {
        for (range, examples) in [
            (
                "6to4 2002::/16",
                &["2002:7f00:1::1", "2002:0808:0808::1"][..],
            ),
            ("Teredo 2001::/32", &["2001:0:4136:e378::1", "2001::1"]),
            ("IETF assignments 2001::/23", &["2001:2::1", "2001:1ff::1"]),
            ("site-local fec0::/10", &["fec0::1", "feff::1"]),
            (
                "IPv4-compatible ::/96",
                &["::127.0.0.1", "::8.8.8.8", "::10.0.0.1"],
            ),
            (
                "NAT64 to private IPv4",
                &["64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe"],
            ),
            ("local-use NAT64 64:ff9b:1::/48", &["64:ff9b:1::1"]),
            ("unique-local fc00::/7", &["fc12::1", "fdff:ffff::1"]),
            ("link-local fe80::/10", &["fe80::1", "febf::1"]),
            ("multicast ff00::/8", &["ff05::2", "ff3e::1"]),
            ("documentation 2001:db8::/32", &["2001:db8::1"]),
            ("documentation 3fff::/20", &["3fff::1", "3fff:fff::1"]),
            ("discard 100::/64", &["100::1"]),
        ] {
            for ip in examples {
                let ip: IpAddr = ip.parse().unwrap();
                assert!(!is_public(ip), "{range}: {ip}");
            }
        }
        // Neighbours of the refused ranges stay reachable.
        for public in [
            "64:ff9b::808:808",
            "2001:200::1",
            "3fff:1000::1",
            "2003::1",
            "2a00::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn endpoints_must_be_https_and_public_unless_allowed() {
        let strict = rules(false, false);
        assert!(check_target("https://client.example.com/cb", &strict).is_ok());
        let http = check_target("http://client.example.com/cb", &strict).unwrap_err();
        assert!(http.contains("https"), "{http}");
        assert!(check_target("ftp://client.example.com/cb", &strict).is_err());
        assert!(check_target("https://127.0.0.1:9/cb", &strict).is_err());
        assert!(check_target("https://[::1]:9/cb", &strict).is_err());
        assert!(check_target("https://[2002:7f00:1::1]/cb", &strict).is_err());
        assert!(check_target("https://[64:ff9b::a00:1]/cb", &strict).is_err());
        assert!(check_target("http://client.example.com/cb", &rules(false, true)).is_ok());
        assert!(check_target("https://127.0.0.1:9/cb", &rules(true, false)).is_ok());
        assert!(check_target("http://127.0.0.1:9/cb", &rules(true, false)).is_err());
        assert!(check_target("http://127.0.0.1:9/cb", &rules(true, true)).is_ok());
        let e = check_registration("url", "http://hooks.example.com", &strict).unwrap_err();
        assert_eq!(e.code(), ErrorCode::EndpointNotAllowed);
        assert!(e.to_string().contains("`url`"));
    }
}
