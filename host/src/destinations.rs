//! Where deliveries may go. Tenants choose their endpoints' URLs, so without a rule a tenant could have the router
//! POST to the machines around it: the cloud's metadata service at 169.254.169.254, a database's HTTP port on
//! 10.0.0.5, an admin page on loopback. Addresses outside the public internet are refused unless the operator lists
//! their network in `allowed_private_networks` (dev mode adds loopback, where a developer's receiver runs).
//!
//! The API refuses such a URL when its host is an address (or `localhost`); a name is only resolved when a
//! delivery connects, by the dispatcher's resolver, so a name that later resolves to a private address is caught
//! there too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::Host;

/// The operator's exceptions to the rule that deliveries only go to public addresses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Destinations {
    allowed: Vec<IpNet>,
    /// Dev mode: plain `http://` may be sent (to an address allowed like any other).
    plain_http: bool,
}

/// Why an address may not be delivered to, for the API's answer and the attempt's record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{address} is {kind} address, and `allowed_private_networks` does not include it")]
pub struct Refused {
    pub address: IpAddr,
    pub kind: &'static str,
}

impl Destinations {
    /// `allowed` from the configuration; in dev mode loopback is allowed too.
    pub fn new(mut allowed: Vec<IpNet>, dev_mode: bool) -> Self {
        if dev_mode {
            allowed.extend(["127.0.0.0/8", "::1/128"].map(|loopback| loopback.parse::<IpNet>().expect("a network")));
        }
        Self { allowed, plain_http: dev_mode }
    }

    /// Whether a delivery may go out in clear text. The API takes `http://` URLs only in dev mode; an endpoint saved
    /// then keeps its URL when the server later runs without it, and must not be sent signed payloads unencrypted.
    pub fn allows_plain_http(&self) -> bool {
        self.plain_http
    }

    pub fn check(&self, address: IpAddr) -> Result<(), Refused> {
        let Some(kind) = non_public_kind(address) else { return Ok(()) };
        // An IPv4-mapped address is the IPv4 host itself, allowed by its network. NAT64 and 6to4 addresses reach a
        // gateway, not the host they name: only their own IPv6 network allows them.
        let mapped = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = |address: IpAddr| self.allowed.iter().any(|network| network.contains(&address));
        if allowed(address) || mapped.is_some_and(allowed) {
            Ok(())
        } else {
            Err(Refused { address, kind })
        }
    }

    /// What can be told of a URL's host without resolving a name: an address literal, or `localhost`, which
    /// resolves to loopback wherever Switchyard runs. Any other name passes here and is checked on connecting.
    pub fn check_host(&self, host: &Host<&str>) -> Result<(), Refused> {
        match host {
            Host::Ipv4(address) => self.check(IpAddr::V4(*address)),
            Host::Ipv6(address) => self.check(IpAddr::V6(*address)),
            Host::Domain(name) if is_localhost(name) => self.check(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Host::Domain(_) => Ok(()),
        }
    }
}

fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Whether a URL's host is this machine by every resolver: `localhost` (and its subdomains, RFC 6761) or a
/// loopback address, IPv4-mapped included.
pub fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => is_localhost(name),
        Host::Ipv4(address) => address.is_loopback(),
        Host::Ipv6(address) => address.is_loopback() || address.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// The kind of special-purpose range (IANA's registries) an address is in, or None for a public address. An
/// IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4) is judged by the address it carries, as that is
/// where the packets end up.
pub fn non_public_kind(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(address) => non_public_v4(address),
        IpAddr::V6(address) => non_public_v6(address),
    }
}

fn non_public_v4(address: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = address.octets();
    Some(match (a, b, c) {
        _ if address.is_loopback() => "a loopback",
        _ if address.is_private() => "a private",
        _ if address.is_link_local() => "a link-local",
        _ if address.is_multicast() => "a multicast",
        (0, _, _) => "an unspecified",
        (100, 64..=127, _) => "a shared (carrier-grade NAT)",
        (192, 0, 0) => "an IETF protocol",
        (198, 18..=19, _) => "a benchmarking",
        _ if address.is_documentation() => "a documentation",
        (240..=255, _, _) => "a reserved",
        _ => return None,
    })
}

fn non_public_v6(address: Ipv6Addr) -> Option<&'static str> {
    if let Some(carried) = carried_ipv4(address) {
        return non_public_v4(carried);
    }
    let segments = address.segments();
    Some(match segments {
        _ if address.is_loopback() => "a loopback",
        _ if address.is_unspecified() => "an unspecified",
        _ if address.is_unique_local() => "a private (unique local)",
        _ if address.is_unicast_link_local() => "a link-local",
        _ if address.is_multicast() => "a multicast",
        // Site-local (deprecated, still routed inside some networks), discard-only, local-use NAT64, documentation.
        [0xfec0..=0xfeff, ..] => "a site-local",
        [0x0100, 0, 0, 0, ..] => "a discard-only",
        [0x0064, 0xff9b, 0x0001, ..] => "a private (local-use NAT64)",
        [0x2001, 0x0db8, ..] => "a documentation",
        // The rest of ::/8 is reserved (IPv4-compatible addresses among them).
        [0, ..] => "a reserved",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 one delivers to: IPv4-mapped (`::ffff:a.b.c.d`), well-known NAT64 (`64:ff9b::/96`)
/// and 6to4 (`2002:aabb:ccdd::/48`).
fn carried_ipv4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(mapped) = address.to_ipv4_mapped() {
        return Some(mapped);
    }
    let segments = address.segments();
    let from = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    match segments {
        [0x0064, 0xff9b, 0, 0, 0, 0, high, low] => Some(from(high, low)),
        [0x2002, high, low, ..] => Some(from(high, low)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn public_addresses_are_public() {
        for address in ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001:80e::200e"] {
            assert_eq!(non_public_kind(ip(address)), None, "{address}");
        }
        // The edges of the ranges below.
        for address in ["9.255.255.255", "11.0.0.1", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0"] {
            assert_eq!(non_public_kind(ip(address)), None, "{address}");
        }
        for address in ["169.253.255.255", "192.167.255.255", "198.17.255.255", "198.20.0.0", "223.255.255.255"] {
            assert_eq!(non_public_kind(ip(address)), None, "{address}");
        }
        // 6to4 and NAT64 of a public address are public.
        for address in ["2002:5db8:d822::1", "64:ff9b::808:808", "::ffff:8.8.8.8"] {
            assert_eq!(non_public_kind(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn special_purpose_addresses_are_named() {
        let cases = [
            ("127.0.0.1", "a loopback"),
            ("127.255.0.9", "a loopback"),
            ("10.0.0.5", "a private"),
            ("172.16.0.1", "a private"),
            ("172.31.255.255", "a private"),
            ("192.168.1.1", "a private"),
            ("169.254.169.254", "a link-local"),
            ("0.0.0.0", "an unspecified"),
            ("0.1.2.3", "an unspecified"),
            ("100.64.0.1", "a shared (carrier-grade NAT)"),
            ("100.127.255.255", "a shared (carrier-grade NAT)"),
            ("192.0.0.170", "an IETF protocol"),
            ("192.0.2.1", "a documentation"),
            ("198.51.100.7", "a documentation"),
            ("203.0.113.7", "a documentation"),
            ("198.18.0.1", "a benchmarking"),
            ("224.0.0.1", "a multicast"),
            ("240.0.0.1", "a reserved"),
            ("255.255.255.255", "a reserved"),
            ("::1", "a loopback"),
            ("::", "an unspecified"),
            ("fd00::1", "a private (unique local)"),
            ("fc12::1", "a private (unique local)"),
            ("fe80::1", "a link-local"),
            ("fec0::1", "a site-local"),
            ("ff02::1", "a multicast"),
            ("100::1", "a discard-only"),
            ("64:ff9b:1::1", "a private (local-use NAT64)"),
            ("2001:db8::1", "a documentation"),
            ("::7f00:1", "a reserved"),
            // IPv6 addresses that reach an IPv4 one are judged by it.
            ("::ffff:127.0.0.1", "a loopback"),
            ("::ffff:169.254.169.254", "a link-local"),
            ("64:ff9b::a00:5", "a private"),
            ("2002:a9fe:a9fe::1", "a link-local"),
        ];
        for (address, kind) in cases {
            assert_eq!(non_public_kind(ip(address)), Some(kind), "{address}");
        }
    }

    #[test]
    fn only_listed_networks_are_allowed_beside_public_ones() {
        let destinations = Destinations::new(vec!["10.1.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()], false);
        assert_eq!(destinations.check(ip("10.1.2.3")), Ok(()));
        assert_eq!(destinations.check(ip("fd00::9")), Ok(()));
        assert_eq!(destinations.check(ip("8.8.8.8")), Ok(()));
        let refused = destinations.check(ip("10.2.0.1")).unwrap_err();
        assert_eq!(refused, Refused { address: ip("10.2.0.1"), kind: "a private" });
        assert_eq!(
            refused.to_string(),
            "10.2.0.1 is a private address, and `allowed_private_networks` does not include it"
        );
        assert!(destinations.check(ip("127.0.0.1")).is_err());
        assert!(destinations.check(ip("169.254.169.254")).is_err());
    }

    #[test]
    fn dev_mode_allows_loopback_and_nothing_else() {
        let destinations = Destinations::new(Vec::new(), true);
        for address in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(destinations.check(ip(address)), Ok(()), "{address}");
        }
        // Gateways that would carry the packets elsewhere are not the loopback interface.
        for address in ["10.0.0.1", "169.254.169.254", "::2", "fe80::1", "64:ff9b::7f00:1", "2002:7f00:1::"] {
            assert!(destinations.check(ip(address)).is_err(), "{address}");
        }
        assert!(destinations.allows_plain_http());
        let production = Destinations::new(vec!["127.0.0.0/8".parse().unwrap()], false);
        assert!(production.check(ip("127.0.0.1")).is_ok() && !production.allows_plain_http());
        assert!(production.check(ip("::ffff:127.0.0.1")).is_ok(), "the same host");
        assert!(production.check(ip("64:ff9b::7f00:1")).is_err(), "a NAT64 gateway's address");
        assert!(Destinations::new(Vec::new(), false).check(ip("127.0.0.1")).is_err());
    }

    #[test]
    fn loopback_hosts_are_told_by_name_or_address() {
        for url in [
            "http://localhost/",
            "http://LOCALHOST./",
            "http://a.localhost/",
            "http://127.9.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(is_loopback_host(&url::Url::parse(url).unwrap().host().unwrap()), "{url}");
        }
        for url in ["http://localhost.example.com/", "http://128.0.0.1/", "http://[::2]/", "http://[64:ff9b::7f00:1]/"]
        {
            assert!(!is_loopback_host(&url::Url::parse(url).unwrap().host().unwrap()), "{url}");
        }
    }

    #[test]
    fn a_host_is_judged_by_its_address_or_as_localhost() {
        let check = |destinations: &Destinations, url: &str| {
            destinations.check_host(&url::Url::parse(url).unwrap().host().unwrap()).map_err(|refused| refused.kind)
        };
        let production = Destinations::new(Vec::new(), false);
        for url in
            ["https://10.0.0.1/", "https://[::1]/", "https://localhost/", "https://LocalHost./", "https://a.localhost/"]
        {
            assert!(check(&production, url).is_err(), "{url}");
        }
        assert_eq!(check(&production, "https://[::ffff:a9fe:a9fe]/"), Err("a link-local"));
        for url in ["https://example.com/", "https://8.8.8.8/", "https://localhost.example.com/"] {
            assert_eq!(check(&production, url), Ok(()), "{url}");
        }
        // The README's way to turn the check off.
        let anywhere = Destinations::new(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()], false);
        assert_eq!(check(&anywhere, "https://localhost/"), Ok(()));
        assert_eq!(check(&anywhere, "https://[fd00::1]/"), Ok(()));
    }
}
