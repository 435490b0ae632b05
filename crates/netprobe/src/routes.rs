//! Which interface carries a family's default route, read from /proc/net/route and
//! /proc/net/ipv6_route (of the process's network namespace). Parsing is pure.

const RTF_UP: u32 = 0x0001;
const RTF_REJECT: u32 = 0x0200;

/// The interface of the IPv4 default route with the lowest metric (a route without a
/// gateway, such as `default dev wg0`, counts too).
pub fn default_v4(proc_net_route: &str) -> Option<String> {
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, flags, metric, mask) = (f.first()?, f.get(1)?, f.get(3)?, f.get(6)?, f.get(7)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let usable = *dest == "00000000" && *mask == "00000000" && flags & RTF_UP != 0 && flags & RTF_REJECT == 0;
            usable.then(|| Some((metric.parse::<u32>().ok()?, iface.to_string()))).flatten()
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface)
}

/// The interface of the IPv6 default route with the lowest metric.
pub fn default_v6(proc_net_ipv6_route: &str) -> Option<String> {
    proc_net_ipv6_route
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, plen, metric, flags, iface) = (f.first()?, f.get(1)?, f.get(5)?, f.get(8)?, f.get(9)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let usable = dest.bytes().all(|b| b == b'0')
                && *plen == "00"
                && flags & RTF_UP != 0
                && flags & RTF_REJECT == 0
                && *iface != "lo";
            usable.then(|| Some((u32::from_str_radix(metric, 16).ok()?, iface.to_string()))).flatten()
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface)
}

/// Reads the current default-route interface of a family.
pub fn current_default(ipv6: bool) -> Option<String> {
    if ipv6 {
        std::fs::read_to_string("/proc/net/ipv6_route").ok().as_deref().and_then(default_v6)
    } else {
        std::fs::read_to_string("/proc/net/route").ok().as_deref().and_then(default_v4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
wg0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0\n\
bad0\t00000000\t00000000\t0201\t0\t0\t1\t00000000\t0\t0\t0\n";

    #[test]
    fn v4_lowest_metric_default_wins_gatewayless_included() {
        assert_eq!(default_v4(ROUTE).as_deref(), Some("wg0"));
        let only_eth0: String = ROUTE.lines().filter(|l| !l.starts_with("wg0")).collect::<Vec<_>>().join("\n");
        assert_eq!(default_v4(&only_eth0).as_deref(), Some("eth0"));
        assert_eq!(default_v4("Iface\tDestination\n"), None);
        assert_eq!(default_v4("garbage\nmore garbage here\n"), None);
    }

    const ROUTE6: &str = "\
20010002000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 ixa1\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010002000000000000000000000002 00000400 00000001 00000000 00000003 ixa1\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010002000200000000000000000002 00000200 00000001 00000000 00000003 ixc1\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";

    #[test]
    fn v6_lowest_metric_default_wins_and_reject_routes_do_not() {
        assert_eq!(default_v6(ROUTE6).as_deref(), Some("ixc1"));
        let without: String = ROUTE6.lines().filter(|l| !l.ends_with("ixc1")).collect::<Vec<_>>().join("\n");
        assert_eq!(default_v6(&without).as_deref(), Some("ixa1"));
        assert_eq!(default_v6(""), None);
    }
}
