//! The partner map: this organisation's profile document, its changes and snapshots, and the
//! directory read from every profile.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::event::{EventId, Kind};

use super::{Engine, EngineError, Refusal, invalid};

impl Engine {
    // ----- The partner map -----

    pub(super) fn forget_directory(&self) {
        if let Ok(mut d) = self.directory.lock() {
            *d = None;
        }
    }

    /// The partner map: every organisation's profile, read from its document (cached).
    pub fn directory(
        &self,
    ) -> Result<std::sync::Arc<BTreeMap<String, crate::map::Profile>>, EngineError> {
        if let Ok(d) = self.directory.lock()
            && let Some(d) = d.as_ref()
        {
            return Ok(d.clone());
        }
        let mut profiles = BTreeMap::new();
        for org in self.store.map_orgs()? {
            if let Some(doc) = self.store.map_doc(&org)?
                && let Some(profile) = crate::map::read(&doc)
                && profile.org == org
            {
                profiles.insert(org, profile);
            }
        }
        let profiles = std::sync::Arc::new(profiles);
        if let Ok(mut d) = self.directory.lock() {
            *d = Some(profiles.clone());
        }
        Ok(profiles)
    }

    /// Appends a map change or snapshot of `org`'s document, naming as dependencies the events
    /// that carried the document's heads before it.
    pub(super) fn append_map(
        &mut self,
        kind: Kind,
        body: Vec<u8>,
        heads_before: &[automerge::ChangeHash],
        now: OffsetDateTime,
    ) -> Result<EventId, EngineError> {
        let mut deps = self.store.map_change_events(heads_before)?;
        deps.truncate(crate::limits::EVENT_DEPS_MAX);
        let id = self.append_plain(kind, body, deps, now)?;
        self.forget_directory();
        Ok(id)
    }

    pub(super) fn map_doc_for(&self, org: &str) -> Result<automerge::AutoCommit, EngineError> {
        let m = self.store.config().require()?.clone();
        crate::map::may_edit(&m, &self.org, org)
            .map_err(|_| Refusal::naming(Refusal::NotProfileEditor, org))?;
        let mut doc = self.store.map_doc(org)?.unwrap_or_default();
        doc.set_actor(automerge::ActorId::from(self.keys.node_key.to_vec()));
        Ok(doc)
    }

    /// Sets an organisation's profile from a file's contents: the difference from the current
    /// document becomes one change. Returns the event, or `None` when nothing changed.
    pub fn map_import(
        &mut self,
        profile: &crate::map::Profile,
        now: OffsetDateTime,
    ) -> Result<Option<EventId>, EngineError> {
        let m = self.store.config().require()?.clone();
        profile.validate(&m).map_err(|e| invalid(e.to_string()))?;
        let mut doc = self.map_doc_for(&profile.org)?;
        let heads = doc.get_heads();
        let Some(change) =
            crate::map::import(&mut doc, profile).map_err(|e| invalid(e.to_string()))?
        else {
            return Ok(None);
        };
        let kind = Kind::MapChange {
            org: profile.org.clone(),
        };
        self.append_map(kind, change, &heads, now).map(Some)
    }

    /// Changes one service's capacity and/or marks it verified today.
    pub fn map_update(
        &mut self,
        org: &str,
        service: &str,
        capacity: Option<crate::map::Capacity>,
        verify: bool,
        now: OffsetDateTime,
    ) -> Result<Option<EventId>, EngineError> {
        let mut doc = self.map_doc_for(org)?;
        let heads = doc.get_heads();
        let today = verify.then_some(now.date());
        let Some(change) = crate::map::update_service(&mut doc, service, capacity, today)
            .map_err(|e| invalid(e.to_string()))?
        else {
            return Ok(None);
        };
        self.append_map(
            Kind::MapChange {
                org: org.to_string(),
            },
            change,
            &heads,
            now,
        )
        .map(Some)
    }

    /// Publishes a compacted save of an organisation's document: nodes that hold it prune the
    /// bodies of the changes it contains, and a fresh node loads it instead of every change.
    pub fn map_snapshot(&mut self, org: &str, now: OffsetDateTime) -> Result<EventId, EngineError> {
        let mut doc = self.map_doc_for(org)?;
        let heads = doc.get_heads();
        let body = doc.save();
        if body.len() > crate::limits::EVENT_BODY_SIZE_MAX_BYTES {
            return Err(Refusal::naming(Refusal::ProfileTooLarge, org).into());
        }
        self.append_map(
            Kind::MapSnapshot {
                org: org.to_string(),
            },
            body,
            &heads,
            now,
        )
    }
}
