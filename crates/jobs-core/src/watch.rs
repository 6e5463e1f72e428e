//! Live changes (docs/spec.md §18): ONE change stream on `tasks` per process, fanned out to
//! every open `watch` of the process, each filtered to its user.
//!
//! - The [`Hub`] opens the stream when the first watcher comes and closes it a while after the
//!   last one left. Every change and every position the stream reports becomes an [`Entry`],
//!   broadcast in order and kept in a bounded window of recent entries. When the hub opens again
//!   it resumes after the last position, so the window stays a gapless record.
//! - A [`Watcher`] turns entries into frames for one user. Its position is the last entry it
//!   read, whoever's change it was: a client sends it back as `Last-Event-ID`.
//! - A reconnect resumes from the window when its position is in it. Otherwise (another instance
//!   served it, or it is older than the window) it catches up on its own short-lived change stream
//!   of its user's changes, then joins the broadcast, whose entries it had subscribed to before
//!   the catch-up started: every change is delivered, a few possibly twice. A position the
//!   database no longer has answers `reset`, and the client reloads its list.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch as state};
use tokio::time::Instant;

use crate::error::{JobsError, Result};
use crate::event_stream::{EventId, Frame};
use crate::replies::TaskView;
use crate::store::{ChangesError, Store, TaskChanges, task_of};
use crate::task::{Task, UserId};

/// Entries kept for reconnects: at one change a second, a quarter of an hour.
const RECENT: usize = 1024;
/// The broadcast's capacity per watcher: a watcher this far behind is sent `reset`.
const BACKLOG: usize = 1024;
/// How long the stream stays open with no watcher (a page reconnecting comes straight back).
const IDLE_GRACE: Duration = Duration::from_secs(30);
/// How long a catch-up stream waits for one more change before it hands over to the broadcast.
const CATCH_UP_AWAIT: Duration = Duration::from_millis(250);
/// The longest a catch-up may take; past it the client is sent `reset`.
const CATCH_UP_BUDGET: Duration = Duration::from_secs(20);
/// Pause before the stream is opened again after an error.
const REOPEN_AFTER: Duration = Duration::from_secs(1);
/// A stream closed longer than this opens from now, not after its last position: replaying
/// hours of changes (a lookup each) for a window nobody reads is not worth it.
const RESUME_WITHIN: Duration = Duration::from_secs(300);
/// A reconnect whose first missed change is older than this is sent `reset` instead of a
/// catch-up through everything since.
const CATCH_UP_HORIZON: Duration = Duration::from_secs(3600);

/// A task's change as every watcher of the process receives it.
#[derive(Debug)]
pub struct Change {
    at: EventId,
    user: UserId,
    /// The task's summary as `list` shows it, as JSON: encoded once for every watcher.
    summary: Arc<str>,
}

/// What the stream reports, in its order.
#[derive(Debug, Clone)]
enum Entry {
    /// A task changed.
    Change(Arc<Change>),
    /// No change up to here (an empty batch moved the stream's position).
    Position(EventId),
    /// The stream had to start over from now: changes may have been missed.
    Reset,
}

impl Entry {
    fn at(&self) -> Option<&EventId> {
        match self {
            Self::Change(change) => Some(&change.at),
            Self::Position(at) => Some(at),
            Self::Reset => None,
        }
    }
}

/// Whether the process's stream is open.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    /// Closed, or opening.
    Opening,
    /// Open: watchers may subscribe.
    Open,
    /// The last attempt to open it failed for a passing reason; it is being tried again.
    Down,
    /// The database has no change streams.
    Unsupported(String),
}

/// The broadcast and the window of recent entries, changed together under one lock so a
/// watcher's view of the window and its subscription meet without a gap.
#[derive(Default)]
struct Shared {
    live: Option<broadcast::Sender<Entry>>,
    recent: VecDeque<Entry>,
    /// Where the stream stands: the newest entry's position.
    position: Option<EventId>,
    /// When the stream last closed for want of watchers.
    closed_at: Option<Instant>,
}

/// The process's one change stream and its watchers.
pub struct Hub {
    store: Arc<Store>,
    shared: Mutex<Shared>,
    status: state::Sender<Status>,
    /// How long one `watch` stays open, and how often it pings.
    duration: Duration,
    ping: Duration,
}

impl Hub {
    /// A hub with no stream open yet.
    pub fn new(store: Arc<Store>, duration: Duration, ping: Duration) -> Self {
        Self {
            store,
            shared: Mutex::default(),
            status: state::Sender::new(Status::Opening),
            duration,
            ping,
        }
    }

    /// How long a stream may stay open: its duration, or less when its token ends sooner.
    fn lifetime(&self, until: Option<std::time::SystemTime>) -> Duration {
        let left = until.map(|until| {
            until
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        });
        left.map_or(self.duration, |left| left.min(self.duration))
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A watcher of `user`'s tasks, after `after` (a `Last-Event-ID`) or from now. Opens the
    /// process's stream if it is not; 503 when it cannot be opened.
    /// `until`: when the caller's credentials stop being accepted; the stream ends by then.
    pub async fn subscribe(
        self: &Arc<Self>,
        user: UserId,
        after: Option<EventId>,
        until: Option<std::time::SystemTime>,
    ) -> Result<Watcher> {
        let (live, replay, from) = loop {
            let mut status = self.status.subscribe();
            {
                let mut shared = self.shared();
                if shared.live.is_none() {
                    let (sender, _) = broadcast::channel(BACKLOG);
                    shared.live = Some(sender.clone());
                    self.status.send_replace(Status::Opening);
                    tokio::spawn(self.clone().run(sender));
                }
                if *status.borrow_and_update() == Status::Open {
                    let live = shared.live.as_ref().expect("open").subscribe();
                    let replay = after.as_ref().and_then(|after| {
                        let at = shared.recent.iter().position(|e| e.at() == Some(after))?;
                        Some(
                            shared
                                .recent
                                .iter()
                                .skip(at + 1)
                                .cloned()
                                .collect::<VecDeque<_>>(),
                        )
                    });
                    break (live, replay, shared.position.clone());
                }
            }
            let waited = async {
                let status = status.wait_for(|s| *s != Status::Opening).await;
                status.map(|s| s.clone())
            };
            let answer = tokio::time::timeout(self.store.operation_timeout(), waited).await;
            match answer {
                Ok(Ok(Status::Open)) => continue,
                Ok(Ok(Status::Unsupported(reason))) => {
                    return Err(JobsError::WatchUnavailable(reason));
                }
                Ok(Ok(_)) | Ok(Err(_)) => return Err(JobsError::DbUnavailable),
                Err(_) => return Err(JobsError::DbTimeout(self.store.operation_timeout())),
            }
        };
        let mut watcher = Watcher {
            user,
            live,
            pending: VecDeque::new(),
            catch_up: None,
            delivered: HashSet::new(),
            at: from,
            resumed: after.is_some(),
            started: false,
            deadline: Instant::now() + self.lifetime(until),
            ping: {
                let mut ping = tokio::time::interval_at(Instant::now() + self.ping, self.ping);
                ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ping
            },
            ended: false,
            store: self.store.clone(),
            sent: 0,
        };
        match (after, replay) {
            (None, _) => {}
            (Some(after), Some(replay)) => {
                watcher.at = Some(after);
                watcher.pending = replay;
            }
            (Some(after), None) => {
                // Not in this process's window: catch up from the database itself.
                let changes = self.store.task_changes(
                    Some(after.token().clone()),
                    Some(&watcher.user),
                    CATCH_UP_AWAIT,
                );
                watcher.at = Some(after);
                match changes.await {
                    Ok(stream) => {
                        watcher.catch_up = Some((stream, Instant::now() + CATCH_UP_BUDGET));
                    }
                    Err(ChangesError::Database(error)) => return Err(error),
                    Err(lost) => {
                        tracing::info!(user = %watcher.user, %lost, "watch cannot resume; reset");
                        watcher.pending.push_back(Entry::Reset);
                    }
                }
            }
        }
        Ok(watcher)
    }

    /// The process's stream: open (after the last position, if any), read until an error or
    /// until nobody has watched for [`IDLE_GRACE`], then close.
    async fn run(self: Arc<Self>, live: broadcast::Sender<Entry>) {
        let mut idle_since: Option<Instant> = None;
        loop {
            let from = {
                let mut shared = self.shared();
                if shared
                    .closed_at
                    .take()
                    .is_some_and(|at| at.elapsed() > RESUME_WITHIN)
                {
                    shared.recent.clear();
                    shared.position = None;
                }
                shared.position.clone()
            };
            let opened = self
                .store
                .task_changes(
                    from.map(|at| at.token().clone()),
                    None,
                    crate::store::CHANGE_AWAIT,
                )
                .await;
            let mut stream = match opened {
                Ok(stream) => stream,
                Err(ChangesError::PositionLost) => {
                    tracing::warn!("change stream position lost; starting from now");
                    self.start_over(&live);
                    tokio::time::sleep(REOPEN_AFTER).await;
                    continue;
                }
                Err(ChangesError::Unsupported(reason)) => {
                    tracing::warn!(reason, "the database has no change streams; watch is off");
                    self.shared().live = None;
                    self.status.send_replace(Status::Unsupported(reason));
                    return;
                }
                Err(ChangesError::Database(error)) => {
                    tracing::warn!(%error, "change stream could not be opened");
                    self.status.send_replace(Status::Down);
                    tokio::time::sleep(REOPEN_AFTER).await;
                    if self.close_if_idle(&live, &mut idle_since) {
                        return;
                    }
                    continue;
                }
            };
            self.publish(
                &live,
                stream.resume_token().map(EventId::new).map(Entry::Position),
            );
            self.status.send_replace(Status::Open);
            tracing::info!("change stream open");
            loop {
                match self.store.next_change(&mut stream).await {
                    Ok(Some(event)) => {
                        let at = EventId::new(event.id);
                        let entry = match event.full_document.and_then(task_of) {
                            Some(task) => Entry::Change(Arc::new(change(at, task))),
                            // Deleted before it could be looked up, or unreadable: nothing
                            // to show, the position moves on.
                            None => Entry::Position(at),
                        };
                        self.publish(&live, Some(entry));
                    }
                    Ok(None) => {
                        let at = stream.resume_token().map(EventId::new);
                        self.publish(&live, at.map(Entry::Position));
                    }
                    Err(ChangesError::PositionLost) => {
                        tracing::warn!("change stream position lost; starting from now");
                        self.start_over(&live);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "change stream interrupted; resuming");
                        self.status.send_replace(Status::Opening);
                        tokio::time::sleep(REOPEN_AFTER).await;
                        break;
                    }
                }
                if self.close_if_idle(&live, &mut idle_since) {
                    return;
                }
            }
            if self.close_if_idle(&live, &mut idle_since) {
                return;
            }
        }
    }

    /// Appends `entry` to the window and broadcasts it, under the lock: the same entry is never
    /// both in a new watcher's replay and in its broadcast. A position equal to the newest is
    /// not repeated.
    fn publish(&self, live: &broadcast::Sender<Entry>, entry: Option<Entry>) {
        let Some(entry) = entry else { return };
        let mut shared = self.shared();
        if matches!(entry, Entry::Position(_)) && entry.at() == shared.position.as_ref() {
            return;
        }
        shared.position = entry.at().cloned();
        if shared.recent.len() == RECENT {
            shared.recent.pop_front();
        }
        shared.recent.push_back(entry.clone());
        let _ = live.send(entry);
    }

    /// The position is gone: forget the window and tell every watcher to reload.
    fn start_over(&self, live: &broadcast::Sender<Entry>) {
        let mut shared = self.shared();
        // Until it is open again, from now: a watcher joining meanwhile waits for it.
        self.status.send_replace(Status::Opening);
        shared.recent.clear();
        shared.position = None;
        let _ = live.send(Entry::Reset);
    }

    /// Closes the stream once nobody has watched for [`IDLE_GRACE`]; decided under the lock,
    /// so a watcher subscribing meanwhile either keeps it open or opens a new one.
    fn close_if_idle(
        &self,
        live: &broadcast::Sender<Entry>,
        idle_since: &mut Option<Instant>,
    ) -> bool {
        let mut shared = self.shared();
        if live.receiver_count() > 0 {
            *idle_since = None;
            return false;
        }
        if idle_since.get_or_insert_with(Instant::now).elapsed() < IDLE_GRACE {
            return false;
        }
        shared.live = None;
        shared.closed_at = Some(Instant::now());
        self.status.send_replace(Status::Opening);
        tracing::info!("change stream closed: nobody watches");
        true
    }
}

/// One task's change, summarised once for every watcher.
fn change(at: EventId, task: Task) -> Change {
    let user = task.user_id.clone();
    let summary = serde_json::to_string(&TaskView::summary(task)).expect("a task view serializes");
    Change {
        at,
        user,
        summary: summary.into(),
    }
}

/// One open `watch`: the frames of one user's changes.
pub struct Watcher {
    user: UserId,
    live: broadcast::Receiver<Entry>,
    /// Entries to read before the broadcast: a replay from the window, or a `reset`.
    pending: VecDeque<Entry>,
    /// A reconnect's own stream of its user's changes, until it runs dry or out of time.
    catch_up: Option<(TaskChanges, Instant)>,
    /// Positions of the changes the catch-up sent, not to send again from the broadcast.
    delivered: HashSet<String>,
    /// The position reached: the last entry read.
    at: Option<EventId>,
    resumed: bool,
    started: bool,
    deadline: Instant,
    ping: tokio::time::Interval,
    ended: bool,
    store: Arc<Store>,
    sent: u64,
}

impl Watcher {
    /// The next frame to send; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Frame> {
        if self.ended {
            return None;
        }
        if !self.started {
            self.started = true;
            return Some(Frame::Ready {
                at: self.at.clone(),
                resumed: self.resumed,
            });
        }
        loop {
            if let Some(entry) = self.pending.pop_front() {
                if let Some(frame) = self.read(entry) {
                    return Some(frame);
                }
                continue;
            }
            if let Some(frame) = self.catch_up().await {
                return Some(frame);
            }
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(self.deadline) => {
                    self.ended = true;
                    return Some(Frame::End);
                }
                entry = self.live.recv() => match entry {
                    Ok(entry) => {
                        if let Some(frame) = self.read(entry) {
                            return Some(frame);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::info!(user = %self.user, missed, "watcher fell behind; reset");
                        return Some(Frame::Reset);
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        self.ended = true;
                        return Some(Frame::End);
                    }
                },
                _ = self.ping.tick() => return Some(Frame::Ping { at: self.at.clone() }),
            }
        }
    }

    /// The frame an entry makes for this watcher, if any; its position is reached either way.
    fn read(&mut self, entry: Entry) -> Option<Frame> {
        match entry {
            Entry::Change(change) => {
                self.at = Some(change.at.clone());
                let mine = change.user == self.user;
                (mine && !self.delivered.contains(&change.at.encode())).then(|| {
                    self.sent += 1;
                    Frame::Task {
                        at: change.at.clone(),
                        summary: change.summary.clone(),
                    }
                })
            }
            Entry::Position(at) => {
                self.at = Some(at);
                None
            }
            Entry::Reset => Some(Frame::Reset),
        }
    }

    /// The catch-up's next change, until it has none left (then the broadcast takes over).
    async fn catch_up(&mut self) -> Option<Frame> {
        loop {
            let (stream, budget) = self.catch_up.as_mut()?;
            if Instant::now() > *budget {
                self.catch_up = None;
                return Some(Frame::Reset);
            }
            match self.store.next_change(stream).await {
                Ok(Some(event)) => {
                    let at = EventId::new(event.id);
                    self.at = Some(at.clone());
                    let stale = event.wall_time.is_some_and(|at| {
                        let age = mongodb::bson::DateTime::now().timestamp_millis()
                            - at.timestamp_millis();
                        age > CATCH_UP_HORIZON.as_millis() as i64
                    });
                    if stale {
                        tracing::info!(user = %self.user, "watch resumes from too far back; reset");
                        self.catch_up = None;
                        return Some(Frame::Reset);
                    }
                    let Some(task) = event.full_document.and_then(task_of) else {
                        continue;
                    };
                    self.delivered.insert(at.encode());
                    self.sent += 1;
                    let change = change(at, task);
                    return Some(Frame::Task {
                        at: change.at,
                        summary: change.summary,
                    });
                }
                Ok(None) => {
                    self.catch_up = None;
                    return None;
                }
                Err(error) => {
                    tracing::info!(user = %self.user, %error, "watch catch-up failed; reset");
                    self.catch_up = None;
                    return Some(Frame::Reset);
                }
            }
        }
    }
}

/// A watcher running on its own task, its frames ready to send: the body of a `watch` reply.
pub struct Streaming {
    /// The frames' bytes, in order; the stream ends when the watcher does.
    pub frames: Frames,
    /// Settles once the response body is dropped: every frame written, or the client gone. A
    /// platform that ends an invocation with its response waits for it (`wait_until`), so the
    /// end is never reported while frames are still on their way.
    pub done: tokio::sync::oneshot::Receiver<()>,
}

/// The bytes of a watcher's frames (`Send + Sync`, as a response body must be); dropping it
/// settles [`Streaming::done`].
pub struct Frames {
    frames: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    _settles_when_dropped: tokio::sync::oneshot::Sender<()>,
}

impl futures_util::Stream for Frames {
    type Item = bytes::Bytes;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.frames.poll_recv(context)
    }
}

impl Watcher {
    /// Runs the watcher on its own task until its stream ends or the client goes away
    /// (noticed at once, not at the next frame).
    pub fn stream(mut self) -> Streaming {
        let (sender, frames) = tokio::sync::mpsc::channel(16);
        let (dropped, done) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    _ = sender.closed() => return,
                    frame = self.next() => frame,
                };
                let Some(frame) = frame else { return };
                if sender.send(frame.encode()).await.is_err() {
                    return;
                }
            }
        });
        Streaming {
            frames: Frames {
                frames,
                _settles_when_dropped: dropped,
            },
            done,
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        tracing::info!(user = %self.user, tasks_sent = self.sent, ended = self.ended, "watch closed");
    }
}
