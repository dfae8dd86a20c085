//! The schedule store ([`ScheduleStore`]): each fire time is
//! claimed once.

use super::*;

/// A schedule is registered once (its `since` stays), each fire time is claimed by
/// exactly one of many concurrent claimers, an earlier fire time is refused after
/// a later one, and the state lists the last and next fires.
pub async fn each_fire_time_of_a_schedule_is_claimed_once(b: Arc<dyn Broker>) {
    let first = store(&b).schedule_begin("tick", None).await.expect("begin");
    assert_eq!((first.last_fire, first.next_fire), (None, None));
    let t0 = after(Duration::from_secs(60));
    let again = store(&b).schedule_begin("tick", Some(t0)).await.expect("begin");
    assert_eq!(again.since, first.since, "registered once");
    assert_eq!(again.next_fire.map(|t| t.timestamp_millis()), Some(t0.timestamp_millis()));

    let mut won = 0;
    for n in 0..5 {
        let fire = t0 + chrono::Duration::seconds(n);
        let next = Some(fire + chrono::Duration::seconds(1));
        let claims = (0..8).map(|_| {
            let b = Arc::clone(&b);
            tokio::spawn(async move { store(&b).schedule_fire("tick", fire, next).await })
        });
        let granted = futures::future::join_all(claims)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(Ok(true))))
            .count();
        assert_eq!(granted, 1, "fire {n} was claimed {granted} times");
        won += granted;
    }
    assert_eq!(won, 5);
    assert!(!store(&b).schedule_fire("tick", t0, None).await.expect("fire"), "an old fire time");
    store(&b).schedule_begin("another", None).await.expect("begin");
    let all = store(&b).schedules().await.expect("list");
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["another", "tick"]);
    let last = t0 + chrono::Duration::seconds(4);
    assert_eq!(all[1].last_fire.map(|t| t.timestamp_millis()), Some(last.timestamp_millis()));
    let next = last + chrono::Duration::seconds(1);
    assert_eq!(all[1].next_fire.map(|t| t.timestamp_millis()), Some(next.timestamp_millis()));
}
