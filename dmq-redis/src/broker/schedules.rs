//! Periodic schedules' shared state: each fire time claimed once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dmq_core::{Result, ScheduleState, ScheduleStore};

use super::*;

#[async_trait]
impl ScheduleStore for RedisBroker {
    async fn schedule_begin(
        &self,
        name: &str,
        next: Option<DateTime<Utc>>,
    ) -> Result<ScheduleState> {
        let mut invocation = self.scripts.schedule_begin.prepare_invoke();
        invocation.key(self.keys.schedules()).arg(name).arg(unix_ms(next));
        let (since, last, next): (i64, i64, i64) =
            self.run("registering a schedule", &invocation).await?;
        Ok(ScheduleState::new(
            name,
            DateTime::from_timestamp_millis(since).unwrap_or_default(),
            instant(last),
            instant(next),
        ))
    }

    async fn schedule_fire(
        &self,
        name: &str,
        fire: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let mut invocation = self.scripts.schedule_fire.prepare_invoke();
        invocation.key(self.keys.schedules()).arg(name).arg(fire.timestamp_millis().max(1));
        invocation.arg(unix_ms(next));
        let claimed: i64 = self.run("claiming a schedule's fire time", &invocation).await?;
        Ok(claimed == 1)
    }

    async fn schedules(&self) -> Result<Vec<ScheduleState>> {
        let mut conn = self.conn().await?;
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.keys.schedules())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err("listing schedules", e))?;
        let mut states: Vec<ScheduleState> = all
            .into_iter()
            .filter_map(|(name, state)| {
                let mut parts = state.splitn(3, ':').map(|p| p.parse::<i64>().ok());
                let (since, last, next) = (parts.next()??, parts.next()??, parts.next()??);
                let since = DateTime::from_timestamp_millis(since)?;
                Some(ScheduleState::new(name, since, instant(last), instant(next)))
            })
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }
}
