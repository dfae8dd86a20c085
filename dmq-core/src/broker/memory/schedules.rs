//! The in-memory broker's schedule store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::InMemoryBroker;
use crate::broker::{ScheduleState, ScheduleStore};
use crate::error::Result;

#[async_trait]
impl ScheduleStore for InMemoryBroker {
    async fn schedule_begin(
        &self,
        name: &str,
        next: Option<DateTime<Utc>>,
    ) -> Result<ScheduleState> {
        let mut state = self.lock();
        let schedule = state.schedule(name);
        if next.is_some() {
            schedule.next_fire = next;
        }
        Ok(schedule.clone())
    }

    async fn schedule_fire(
        &self,
        name: &str,
        fire: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let mut state = self.lock();
        let schedule = state.schedule(name);
        if schedule.last_fire.is_some_and(|last| fire <= last) {
            return Ok(false);
        }
        schedule.last_fire = Some(fire);
        schedule.next_fire = next;
        Ok(true)
    }

    async fn schedules(&self) -> Result<Vec<ScheduleState>> {
        Ok(self.lock().schedules.values().cloned().collect())
    }
}
