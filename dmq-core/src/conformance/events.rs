//! The event stream ([`EventStream`]): events read back in order,
//! cursors, woken reads, the cap.

use super::*;

/// Events published in batches read back from the oldest in the order they were
/// published, every kind with all its facts.
pub async fn published_events_read_back_in_order(b: Arc<dyn Broker>) {
    let published = events(20);
    for batch in [&published[..7], &published[7..8], &published[8..]] {
        stream(&b).publish_events(batch).await.expect("publish");
    }
    let page =
        stream(&b).read_events(&EventsFrom::Oldest, 100, Duration::ZERO).await.expect("read");
    let expected: Vec<Event> = published.iter().map(|e| Event::clone(e)).collect();
    assert_eq!(page.events, expected);
    assert_eq!(page.skipped, 0);
    let again = stream(&b).read_events(&EventsFrom::After(page.cursor), 100, Duration::ZERO).await;
    assert!(again.expect("read").events.is_empty(), "nothing after the last event");
}

/// Pages of at most `max` events follow each other through and across batches from
/// the cursor each returns; `Now` starts after what is there, `Last(n)` at the
/// last n events, and a `max` of 0 only places the cursor.
pub async fn an_event_cursor_reads_on_where_its_page_ended(b: Arc<dyn Broker>) {
    let all = events(7);
    let now = stream(&b).read_events(&EventsFrom::Now, 0, Duration::ZERO).await.expect("place");
    assert!(now.events.is_empty());
    for batch in [&all[..3], &all[3..4], &all[4..6]] {
        stream(&b).publish_events(batch).await.expect("publish");
    }
    let mut from = EventsFrom::After(now.cursor);
    let mut pages = Vec::new();
    for _ in 0..4 {
        let page = stream(&b).read_events(&from, 2, Duration::ZERO).await.expect("read");
        pages.push(ids(&page.events));
        from = EventsFrom::After(page.cursor);
    }
    let expected = [ids(&all[..2]), ids(&all[2..4]), ids(&all[4..6]), Vec::new()];
    assert_eq!(pages, expected, "pages of two, then nothing");

    for (n, expected) in [(0, &all[6..6]), (2, &all[4..6]), (3, &all[3..6]), (4, &all[2..6])] {
        let page = stream(&b).read_events(&EventsFrom::Last(n), 100, Duration::ZERO).await;
        assert_eq!(ids(&page.expect("read").events), ids(expected), "the last {n}");
    }
    let page = stream(&b).read_events(&EventsFrom::Last(100), 100, Duration::ZERO).await;
    assert_eq!(ids(&page.expect("read").events), ids(&all[..6]), "fewer kept than asked");
    let first =
        stream(&b).read_events(&EventsFrom::Last(4), 3, Duration::ZERO).await.expect("read");
    assert_eq!(ids(&first.events), ids(&all[2..5]), "the last 4, three at a time");
    let rest = EventsFrom::After(first.cursor);
    let rest = stream(&b).read_events(&rest, 3, Duration::ZERO).await.expect("read");
    assert_eq!(ids(&rest.events), ids(&all[5..6]));

    let tail = stream(&b).read_events(&EventsFrom::Now, 10, Duration::ZERO).await.expect("read");
    assert!(tail.events.is_empty(), "Now starts after what is there");
    stream(&b).publish_events(&all[6..]).await.expect("publish");
    let page = stream(&b).read_events(&EventsFrom::After(tail.cursor), 10, Duration::ZERO).await;
    assert_eq!(ids(&page.expect("read").events), ids(&all[6..]), "only what came after");
}

/// A read that finds nothing waits for a publish and returns with it, without
/// sleeping out its wait; with nothing published it returns empty after its wait.
pub async fn a_waiting_event_read_is_woken_by_a_publish(b: Arc<dyn Broker>) {
    let published = events(2);
    let now = stream(&b).read_events(&EventsFrom::Now, 0, Duration::ZERO).await.expect("place");
    let started = Instant::now();
    let reader = {
        let (b, from) = (Arc::clone(&b), EventsFrom::After(now.cursor.clone()));
        tokio::spawn(async move { stream(&b).read_events(&from, 10, LONG).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!reader.is_finished(), "the read returned before anything was published");
    stream(&b).publish_events(&published).await.expect("publish");
    let page = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the publish woke the read")
        .expect("the read did not panic")
        .expect("read");
    assert_eq!(ids(&page.events), ids(&published));
    assert!(started.elapsed() < Duration::from_secs(10), "woken, not timed out");

    let started = Instant::now();
    let wait = Duration::from_millis(300);
    let empty =
        stream(&b).read_events(&EventsFrom::After(page.cursor), 10, wait).await.expect("read");
    assert!(empty.events.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "gave up after {waited:?}, before its wait");
    assert!(waited < Duration::from_secs(10), "overslept its wait: {waited:?}");
}

/// The stream is capped: publishing enough drops the oldest events, and what is
/// kept is the newest events, in order, with none missing between.
pub async fn the_event_stream_cap_drops_the_oldest_events(b: Arc<dyn Broker>) {
    // One event per batch, so that every kind of cap (in events or in batches)
    // is reached; the cap is the broker's, so publish until the first is gone.
    let template = events(1).pop().expect("an event");
    let mut published = Vec::new();
    let mut trimmed = false;
    while published.len() < 300_000 {
        for _ in 0..500 {
            let mut event = Event::clone(&template);
            event.id = TaskId::new();
            published.push(event.id);
            stream(&b).publish_events(&[Arc::new(event)]).await.expect("publish");
        }
        let oldest = stream(&b).read_events(&EventsFrom::Oldest, 1, Duration::ZERO).await;
        if oldest.expect("read").events.first().map(|e| e.id) != Some(published[0]) {
            trimmed = true;
            break;
        }
    }
    assert!(trimmed, "the stream kept all of {} events", published.len());
    let mut kept = Vec::new();
    let mut from = EventsFrom::Oldest;
    loop {
        let page = stream(&b).read_events(&from, 1_000, Duration::ZERO).await.expect("read");
        if page.events.is_empty() {
            break;
        }
        kept.extend(ids(&page.events));
        from = EventsFrom::After(page.cursor);
    }
    assert!(!kept.is_empty(), "the cap kept nothing");
    let start = published.iter().position(|id| *id == kept[0]).expect("a published event");
    assert!(start > 0, "the oldest was dropped");
    assert!(kept == published[start..], "the newest {} events, in order", kept.len());
}
