//! The worker's transitions: claim a delivered task, renew its lease, and record how the
//! attempt ended (completed, failed, or scheduled for an automatic retry). Every write after
//! the claim is fenced on the lease.

use super::*;

impl Store {
    /// queued (or scheduled and due at `now`) -> processing: takes a new lease and counts the
    /// attempt. `None` when there is nothing to claim: a redelivery, a task cancelled or
    /// failed meanwhile, or a scheduled task delivered before it is due. `by` is who delivered
    /// it.
    pub async fn claim(
        &self,
        task_id: &TaskId,
        lease_for: Duration,
        by: &str,
        now: DateTime,
    ) -> Result<Option<Task>> {
        let lease_id = uuid::Uuid::new_v4().to_string();
        let lease = doc! { "id": &lease_id, "expiresAt": later(lease_for) };
        // ONE pipeline update, so the `claimed` event can carry the payload version the attempt
        // runs (docs/spec.md §17), read by the update itself. The attempt number is only known
        // after it: the reply's `attempts` says which one it was.
        let literal = |value: Bson| Bson::Document(doc! { "$literal": value });
        let claimed = Event::new(EventKind::Claimed, by);
        let mut claimed_event = bson::to_document(&claimed).expect("an event is a document");
        for (_, value) in claimed_event.iter_mut() {
            *value = literal(value.clone());
        }
        claimed_event.insert("payloadVersion", doc! { "$ifNull": ["$payloadVersion", 1] });
        let events = doc! { "$slice": [
            { "$concatArrays": [{ "$ifNull": ["$events", []] }, [claimed_event]] },
            -EVENTS_LEN,
        ] };
        let update = vec![doc! { "$set": {
            "status": literal(TaskStatus::Processing.into()), "lease": literal(lease.into()),
            "progress": literal(0.into()), "startedAt": literal(now.into()),
            "updatedAt": literal(now.into()), "nextAttemptAt": literal(Bson::Null),
            "attempts": { "$add": [{ "$ifNull": ["$attempts", 0] }, 1] },
            "events": events,
        } }];
        let claimed = match self
            .find_one_and_update(claimable(task_id, now), update, ReturnDocument::After)
            .await
            .at("process.claimed")
        {
            // The claim may have applied without answering: it did if the task holds our
            // lease (else the redelivery that follows the error finds the task running).
            Err(error) if error.may_have_applied() => {
                // A read is safe to repeat: a claim left unknown strands the task until its
                // lease expires (then it is failed as a lost worker).
                let mut read = self.find(task_id).await;
                for pause in [250, 1000] {
                    if read.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    read = self.find(task_id).await;
                }
                match read?.filter(|t| t.lease.as_ref().is_some_and(|l| l.id == lease_id)) {
                    Some(task) => Some(task),
                    None => return Err(error),
                }
            }
            other => other?,
        };
        if claimed.is_some() {
            log(task_id, "queued|scheduled", TaskStatus::Processing, "claim");
        }
        Ok(claimed)
    }

    /// Progress from the worker; also renews the lease. `false` means the worker no longer
    /// owns the task and must stop.
    pub async fn report_progress(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        progress: i32,
        lease_for: Duration,
    ) -> Result<bool> {
        self.update_one(
            worker_fence(task_id, &lease.id),
            doc! { "$set": { "progress": progress.clamp(0, 100), "lease.expiresAt": later(lease_for),
                             "updatedAt": DateTime::now() } },
        )
        .await
    }

    /// A step of the running attempt (docs/spec.md §16): `step` stored as entry `index` of
    /// `steps`, every entry after it dropped (so what is stored stays a prefix of one run's
    /// sequence, and writing the same record twice leaves one), with its `stepCompleted` event
    /// and, when `resumed`, the `resumed` event first; renews the lease. ONE update fenced on
    /// the lease and on the place: `false` means the worker no longer owns the task (or the
    /// array is not what this run wrote) and must stop.
    pub async fn record_step(
        &self,
        (task_id, lease): (&TaskId, &Lease),
        (index, step): (usize, &StepRecord),
        resumed: bool,
        (lease_for, by): (Duration, &str),
    ) -> Result<bool> {
        let index = index as i32;
        let record = bson::to_bson(step).expect("a step record is always representable as BSON");
        let mut update = doc! {
            "$set": { "lease.expiresAt": later(lease_for), "updatedAt": DateTime::now() },
            "$push": { "steps": { "$each": [record], "$position": index, "$slice": index + 1 } },
        };
        let about = |kind| Event::new(kind, by).attempt(step.attempt).step(&step.name);
        let mut events = Vec::new();
        if resumed {
            events.push(about(EventKind::Resumed));
        }
        if step.status == StepStatus::Completed {
            events.push(about(EventKind::StepCompleted));
        }
        push_events(&mut update, &events);
        // Fenced on the place too: `steps` holds entries 0..k (and at most entry k itself, when
        // the same record is written again), so a write of entry k that the server applies
        // late, after entry k + 1 was written, matches nothing instead of cutting it off.
        let mut filter = worker_fence(task_id, &lease.id);
        filter.insert(format!("steps.{}", index + 1), doc! { "$exists": false });
        if index > 0 {
            filter.insert(format!("steps.{}", index - 1), doc! { "$exists": true });
        }
        let recorded = self.update_one(filter, update).await?;
        if recorded {
            tracing::info!(task_id = %task_id, step = %step.name, status = ?step.status, index, resumed, "step recorded");
        }
        Ok(recorded)
    }

    /// The worker's own heartbeat, whatever the processor reports. `false` means the lease
    /// was taken (cancelled, swept): the worker stops its processor.
    pub async fn renew_lease(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        lease_for: Duration,
    ) -> Result<bool> {
        self.update_one(
            worker_fence(task_id, &lease.id),
            doc! { "$set": { "lease.expiresAt": later(lease_for) } },
        )
        .await
    }

    /// processing -> completed, fenced on the lease. `by` is who delivered the attempt.
    pub async fn complete(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        result: Document,
        by: &str,
    ) -> Result<bool> {
        let now = DateTime::now();
        let mut update = doc! {
            "$set": { "status": TaskStatus::Completed, "progress": 100, "result": result,
                      "lastError": Bson::Null, "finishedAt": now, "updatedAt": now },
            "$unset": { "lease": "" },
        };
        push_events(&mut update, &[Event::new(EventKind::Completed, by)]);
        let done = self
            .update_one(worker_fence(task_id, &lease.id), update)
            .await?;
        if done {
            log(task_id, "processing", TaskStatus::Completed, "complete");
        }
        Ok(done)
    }

    /// processing -> failed, fenced on the lease. `permanent`: the processor said not to retry
    /// it automatically (recorded on the `errorHistory` entry).
    pub async fn fail(
        &self,
        (task_id, user): (&TaskId, &UserId),
        lease: &Lease,
        ran: impl Into<Ran>,
        message: &str,
        permanent: bool,
        by: &str,
    ) -> Result<bool> {
        let ran = ran.into();
        let mut update = failure_update(TaskStatus::Failed, ran, message, permanent);
        let event = Event::new(EventKind::Failed, by)
            .attempt(ran.attempt)
            .failure(message, &update);
        push_events(&mut update, &[event]);
        self.fail_where(
            worker_fence(task_id, &lease.id),
            update,
            (task_id, user),
            "processing",
            "fail",
        )
        .await
    }

    /// processing -> scheduled: a failed attempt with automatic retries left waits until
    /// `handoff.at` (its next attempt), one automatic retry used, its hand-off recorded.
    /// Fenced on the lease.
    pub async fn schedule_retry(
        &self,
        task_id: &TaskId,
        lease: &Lease,
        ran: impl Into<Ran>,
        message: &str,
        handoff: &Handoff,
        by: &str,
    ) -> Result<bool> {
        let ran = ran.into();
        let attempt = ran.attempt;
        let mut update = failure_update(TaskStatus::Scheduled, ran, message, false);
        let set = update
            .get_document_mut("$set")
            .expect("a failure sets fields");
        set.insert("nextAttemptAt", handoff.at);
        set.insert("handoff", handoff.to_bson());
        // `retriesTotal` as well (docs/spec.md §3): a task stored before it was kept starts
        // it here, from 1.
        update.insert("$inc", doc! { "autoRetries": 1, "retriesTotal": 1 });
        let failed = Event::new(EventKind::Failed, by)
            .attempt(attempt)
            .failure(message, &update);
        let scheduled = Event::new(EventKind::Scheduled, "auto").attempt(attempt + 1);
        push_events(&mut update, &[failed, scheduled]);
        let scheduled = self
            .update_one(worker_fence(task_id, &lease.id), update)
            .await?;
        if scheduled {
            log(
                task_id,
                "processing",
                TaskStatus::Scheduled,
                "schedule_retry",
            );
        }
        Ok(scheduled)
    }
}
