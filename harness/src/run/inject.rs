//! Carries a run's faults out: link faults (cuts, partitions by proxy, one-way partitions,
//! toxics) through the devnet's link proxy, node faults (kill, stop, pause, restart, isolate)
//! through its backend.

use crate::backend::Backend;
use crate::links::LinkControl;
use crate::scenario::{Action, Planned, ScenarioError};
use crate::testnet::record::DevnetState;

/// Carries faults out on one devnet.
pub struct Injector<'a> {
    backend: &'a dyn Backend,
    links: Option<LinkControl>,
}

fn link_error(action: &str) -> impl FnOnce(String) -> ScenarioError + '_ {
    move |reason| ScenarioError::Action {
        action: action.into(),
        node: "proxy".into(),
        reason,
    }
}

impl<'a> Injector<'a> {
    pub fn new(backend: &'a dyn Backend, state: &DevnetState) -> Injector<'a> {
        Injector {
            backend,
            links: state.proxy.as_ref().map(LinkControl::new),
        }
    }

    fn link_control(&self) -> Result<&LinkControl, ScenarioError> {
        self.links.as_ref().ok_or_else(|| ScenarioError::Action {
            action: "link fault".into(),
            node: "-".into(),
            reason: "this devnet has no link proxy (network.proxy = false)".into(),
        })
    }

    /// Starts `step` on its nodes or links.
    pub fn begin(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        match (step.action, &step.toxic) {
            (Action::Cut, _) => self
                .link_control()?
                .cut(&step.links)
                .map_err(link_error("cut")),
            (Action::Toxic, Some(toxic)) => self
                .link_control()?
                .add_toxic(&step.links, &step.tag, toxic)
                .map_err(link_error("toxic")),
            (Action::OneWay, _) => self
                .link_control()?
                .drop_directions(&step.links, &step.tag)
                .map_err(link_error("one-way partition")),
            _ => self.backend.begin(state, step),
        }
    }

    /// Undoes `step` (reconnect, start, unpause, re-enable links, remove toxics).
    pub fn end(&self, state: &mut DevnetState, step: &Planned) -> Result<(), ScenarioError> {
        match (step.action, &step.toxic) {
            (Action::Cut, _) => self
                .link_control()?
                .restore(&step.links)
                .map_err(link_error("restore")),
            (Action::Toxic, Some(toxic)) => self
                .link_control()?
                .remove_toxic(&step.links, &step.tag, toxic)
                .map_err(link_error("remove toxic")),
            (Action::OneWay, _) => self
                .link_control()?
                .restore_directions(&step.links, &step.tag)
                .map_err(link_error("end one-way partition")),
            _ => self.backend.end(state, step),
        }
    }
}
