//! Waiting for a routing group's members on a gateway's pools: each
//! member's pool live, and the group taking traffic at full weight.

use std::sync::Arc;
use std::time::Duration;

use rpcgate::pool::Pools;

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} within 60 s"))
}

/// Waits until every listed member of `group` has a live connection and
/// takes traffic at its full weight.
pub async fn members_active(pools: &Arc<Pools>, group: &str, members: &[&str]) {
    bounded(
        "the members up",
        pools.wait_until_groups(|groups| {
            groups.iter().any(|g| {
                let view = g.view();
                g.name() == group
                    && view.len() == members.len()
                    && view
                        .iter()
                        .all(|m| members.contains(&m.member.as_str()) && m.state == "active")
            })
        }),
    )
    .await;
}

/// A connection came up or closed: the group maintainer looks at its
/// members again within its tick, but `members_active` also needs each
/// member's pool to have come up, which it sees on its next look.
pub async fn wait_connected(pools: &Arc<Pools>, members: &[&str]) {
    for member in members {
        let pool = pools.get(member);
        bounded(
            "a live connection",
            pool.wait_until(|conns| conns.iter().any(|c| c.state == "live")),
        )
        .await;
    }
}
