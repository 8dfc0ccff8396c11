//! The stop signal every proxy and link runs on (vendored noxious, patch 4 in
//! vendor/noxious/BLYAN.md): a clone or fork made after the stop was sent still sees it, so the
//! links of a client accepted while its proxy was being disabled stop with the proxy instead
//! of keeping a "cut" link open.

use std::time::Duration;

use noxious::signal::Stop;

const WAIT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_fork_or_clone_made_after_the_stop_stops_at_once() {
    let (stop, stopper) = Stop::new();
    stopper.stop();
    // As create_links does for a client accepted during the stop: fork, then clone per link.
    let (forked, _forked_stopper) = stop.fork();
    assert!(forked.stop_received(), "a fork made after the stop");
    let mut link = forked.clone();
    assert!(link.stop_received(), "a clone of that fork");
    tokio::time::timeout(WAIT, link.recv())
        .await
        .expect("the link's recv returns: the stop was sent before it subscribed");
    let mut cloned = stop.clone();
    tokio::time::timeout(WAIT, cloned.recv())
        .await
        .expect("a clone made after the stop returns from recv");
}

#[tokio::test]
async fn a_fork_made_before_the_stop_stops_with_it() {
    let (stop, stopper) = Stop::new();
    let (forked, _forked_stopper) = stop.fork();
    let mut link = forked.clone();
    assert!(!link.stop_received(), "nothing sent yet");
    stopper.stop();
    tokio::time::timeout(WAIT, link.recv())
        .await
        .expect("the stop reaches the fork's links");
    assert!(link.stop_received());
}

#[tokio::test]
async fn a_forks_own_stopper_stops_only_the_fork() {
    let (stop, _stopper) = Stop::new();
    let (mut forked, forked_stopper) = stop.fork();
    forked_stopper.stop();
    tokio::time::timeout(WAIT, forked.recv())
        .await
        .expect("the fork stops");
    assert!(!stop.stop_received(), "the original runs on");
}

/// What create_links does when a disable meets a link that just ended: the proxy's stop and
/// the client's own stopper both fire before the link's fork has read either. Each stop is a
/// message on a broadcast channel of capacity 1, so the second overwrote the first and the
/// fork's forwarder saw `Lagged`, which it took for the end of the channel: that link never
/// stopped and kept carrying a "cut" connection (patch 6).
#[tokio::test]
async fn a_fork_stops_even_when_two_stops_reach_its_parent_before_it_reads_one() {
    let (proxy, proxy_stopper) = Stop::new();
    let (links, links_stopper) = proxy.fork();
    let (mut link, _link_stopper) = links.fork();
    proxy_stopper.stop();
    links_stopper.stop();
    tokio::time::timeout(WAIT, link.recv())
        .await
        .expect("the link stops although its parent got two stops at once");
    assert!(link.stop_received());
}
