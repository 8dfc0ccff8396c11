//! The Tendermint consensus core as a pure state machine: [`Consensus::handle`] takes an
//! [`Input`] and returns the [`Effect`]s the host must carry out, in order. No IO, no clock, no
//! randomness: the node and the simulator drive this very code.
//!
//! The rules follow Algorithm 1 of "The latest gossip on BFT consensus" (Buchman, Kwon,
//! Milosevic, 2018); comments cite its line numbers. `f+1` and `2f+1` there are "more than a
//! third" and "more than two thirds" of the voting power here.
//!
//! | step | condition | effect (line) |
//! |---|---|---|
//! | any | start of round `r`, we propose | re-propose the valid value with its round, or ask for a value (L14-19) |
//! | any | start of round `r` | schedule propose timeout (L21) |
//! | propose | proposal `(v, -1)` | prevote `v` if valid and (unlocked or locked on `v`), else nil (L22-27) |
//! | propose | proposal `(v, vr)` + 2f+1 prevotes `(vr, v)`, `vr < r` | prevote `v` if valid and (locked round <= vr or locked on `v`), else nil (L28-33) |
//! | prevote | 2f+1 prevotes of any value, first time | schedule prevote timeout (L34-35) |
//! | >= prevote | valid proposal `v` + 2f+1 prevotes for `v`, first time | in prevote: lock `v`, precommit `v`; always: valid value := `v` (L36-43) |
//! | prevote | 2f+1 prevotes for nil | precommit nil (L44-46) |
//! | any | 2f+1 precommits of any value, first time | schedule precommit timeout (L47-48) |
//! | any | valid proposal `v` of round `r'` + 2f+1 precommits for `v` in `r'` | decide `v` (L49-54) |
//! | any | f+1 senders in round `r' > r` | start round `r'` (L55-56) |
//! | propose | propose timeout of this round | prevote nil (L57-60) |
//! | prevote | prevote timeout of this round | precommit nil (L61-64) |
//! | any | precommit timeout of this round | start round `r + 1` (L65-67) |

use std::collections::BTreeMap;

use super::keeper::{AddOutcome, VoteKeeper};
use super::types::{
    Evidence, Height, Proposal, Round, SignedProposal, SignedVote, ValidatorIndex, ValueId, Vote,
    VoteKind,
};
use super::validators::ValidatorSet;

/// Messages more than this many rounds ahead of ours are ignored (bounds memory).
pub const MAX_ROUNDS_AHEAD: Round = 64;
/// Distinct proposals kept per round. An honest proposer sends one; an equivocating one may send
/// several, and the one that gathers a quorum must be at hand to decide (L49).
pub const MAX_PROPOSALS_PER_ROUND: usize = 4;

/// Round timeouts: `base + round * delta`, in milliseconds, for each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub timeout_propose_ms: u64,
    pub timeout_propose_delta_ms: u64,
    pub timeout_prevote_ms: u64,
    pub timeout_prevote_delta_ms: u64,
    pub timeout_precommit_ms: u64,
    pub timeout_precommit_delta_ms: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            timeout_propose_ms: 1000,
            timeout_propose_delta_ms: 500,
            timeout_prevote_ms: 500,
            timeout_prevote_delta_ms: 250,
            timeout_precommit_ms: 500,
            timeout_precommit_delta_ms: 250,
        }
    }
}

impl Params {
    /// The duration of a timeout; it grows linearly with the round.
    pub fn duration_ms(&self, kind: TimeoutKind, round: Round) -> u64 {
        let round = u64::from(round);
        match kind {
            TimeoutKind::Propose => self.timeout_propose_ms + round * self.timeout_propose_delta_ms,
            TimeoutKind::Prevote => self.timeout_prevote_ms + round * self.timeout_prevote_delta_ms,
            TimeoutKind::Precommit => {
                self.timeout_precommit_ms + round * self.timeout_precommit_delta_ms
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeoutKind {
    Propose,
    Prevote,
    Precommit,
}

/// A timeout the host scheduled and now reports as expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeout {
    pub kind: TimeoutKind,
    pub height: Height,
    pub round: Round,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Propose,
    Prevote,
    Precommit,
    /// Decided; waiting for the host to start the next height.
    Commit,
}

/// Where a restarted validator resumes, from what its signer persisted: the round it last
/// signed in, its lock, and its last signed vote (counted again, and not cast twice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Resume {
    pub round: Round,
    pub locked: Option<(Round, ValueId)>,
    pub last_vote: Option<SignedVote>,
}

/// What the host tells the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Begin `height` with `validators` (first, and after each decision).
    StartHeight {
        height: Height,
        validators: ValidatorSet,
        resume: Option<Resume>,
    },
    /// The value to propose, answering [`Effect::GetValue`].
    ProposeValue {
        height: Height,
        round: Round,
        value: ValueId,
    },
    /// A proposal whose signature the host verified; `valid` is the application's verdict on
    /// the proposed block.
    Proposal {
        proposal: SignedProposal,
        valid: bool,
    },
    /// A vote whose signature the host verified.
    Vote(SignedVote),
    /// A timeout that expired.
    Timeout(Timeout),
    /// A commit certificate from a peer that decided this height already (catch-up / block
    /// sync): the proposal and precommits, signatures verified by the host. Decides if the
    /// precommits are a quorum for the proposal's value, whatever this core's own vote set holds.
    Commit {
        proposal: SignedProposal,
        precommits: Vec<SignedVote>,
    },
}

/// What the core asks the host to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Build a block for this height and round and answer with [`Input::ProposeValue`].
    GetValue { height: Height, round: Round },
    /// Persist, sign and broadcast this proposal, and feed it back as an input.
    Propose(Proposal),
    /// Persist, sign and broadcast this vote, and feed it back as an input.
    Vote(Vote),
    /// Report the timeout after `duration_ms`.
    ScheduleTimeout { timeout: Timeout, duration_ms: u64 },
    /// `value` is decided at `height` in `round`; `commit` is the quorum of precommits.
    Decide {
        height: Height,
        round: Round,
        value: ValueId,
        commit: Vec<SignedVote>,
    },
    /// A validator equivocated.
    Evidence(Box<Evidence>),
}

/// The consensus state of one validator (or of a non-voting observer when `me` is `None`).
pub struct Consensus {
    params: Params,
    me: Option<ValidatorIndex>,
    validators: ValidatorSet,
    proposers: Vec<ValidatorIndex>,
    height: Height,
    round: Round,
    step: Step,
    locked: Option<(Round, ValueId)>,
    valid: Option<(Round, ValueId)>,
    proposals: BTreeMap<Round, Vec<(SignedProposal, bool)>>,
    keeper: VoteKeeper,
    decided: Option<(Round, ValueId)>,
    /// "For the first time" flags of lines 34, 36 and 47, for the current round.
    prevote_timeout_scheduled: bool,
    polka_seen: bool,
    precommit_timeout_scheduled: bool,
    proposed: bool,
    ignore_lock: bool,
}

impl Consensus {
    /// A core waiting for [`Input::StartHeight`].
    pub fn new(params: Params, me: Option<ValidatorIndex>, validators: ValidatorSet) -> Consensus {
        let keeper = VoteKeeper::new(validators.validators().iter().map(|v| v.power).collect());
        Consensus {
            params,
            me,
            validators,
            proposers: Vec::new(),
            height: 0,
            round: 0,
            step: Step::Commit,
            locked: None,
            valid: None,
            proposals: BTreeMap::new(),
            keeper,
            decided: None,
            prevote_timeout_scheduled: false,
            polka_seen: false,
            precommit_timeout_scheduled: false,
            proposed: false,
            ignore_lock: false,
        }
    }

    /// This validator's index in the set of the heights from the next [`Input::StartHeight`] on
    /// (`None`: observe only). The set changes between epochs, and the index with it.
    pub fn set_validator_index(&mut self, me: Option<ValidatorIndex>) {
        self.me = me;
    }

    /// Fault switch: prevote as if never locked. This breaks the locking rule; it exists for
    /// Byzantine "amnesia" peers and for the test that shows the simulator catches the break.
    pub fn set_ignore_lock(&mut self, ignore: bool) {
        self.ignore_lock = ignore;
    }

    pub fn height(&self) -> Height {
        self.height
    }

    pub fn round(&self) -> Round {
        self.round
    }

    pub fn step(&self) -> Step {
        self.step
    }

    pub fn locked(&self) -> Option<(Round, ValueId)> {
        self.locked
    }

    pub fn decided(&self) -> Option<(Round, ValueId)> {
        self.decided
    }

    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    pub fn keeper(&self) -> &VoteKeeper {
        &self.keeper
    }

    /// The first proposal this core received for `round`, if any.
    pub fn proposal(&self, round: Round) -> Option<&SignedProposal> {
        self.proposals
            .get(&round)?
            .first()
            .map(|(proposal, _)| proposal)
    }

    /// Every proposal held at this height (at most [`MAX_PROPOSALS_PER_ROUND`] per round).
    pub fn proposals(&self) -> impl Iterator<Item = &SignedProposal> {
        self.proposals
            .values()
            .flatten()
            .map(|(proposal, _)| proposal)
    }

    /// The proposal of `round` for `value`, if received.
    pub fn proposal_for(&self, round: Round, value: ValueId) -> Option<&SignedProposal> {
        self.proposals
            .get(&round)?
            .iter()
            .map(|(proposal, _)| proposal)
            .find(|proposal| proposal.proposal.value == value)
    }

    /// The proposer of `round` at the current height.
    pub fn proposer(&mut self, round: Round) -> ValidatorIndex {
        if round as usize >= self.proposers.len() {
            let wanted = (round + 1).max(self.proposers.len() as Round * 2).max(4);
            self.proposers = self.validators.proposers(wanted);
        }
        self.proposers[round as usize]
    }

    /// Applies one input; returns the effects to carry out, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Effect> {
        let mut effects = Vec::new();
        match input {
            Input::StartHeight {
                height,
                validators,
                resume,
            } => self.start_height(height, validators, resume, &mut effects),
            Input::ProposeValue {
                height,
                round,
                value,
            } => self.on_value(height, round, value, &mut effects),
            Input::Proposal { proposal, valid } => self.on_proposal(proposal, valid, &mut effects),
            Input::Vote(vote) => self.on_vote(vote, &mut effects),
            Input::Timeout(timeout) => self.on_timeout(timeout, &mut effects),
            Input::Commit {
                proposal,
                precommits,
            } => self.on_commit(proposal, precommits, &mut effects),
        }
        effects
    }

    fn start_height(
        &mut self,
        height: Height,
        validators: ValidatorSet,
        resume: Option<Resume>,
        effects: &mut Vec<Effect>,
    ) {
        assert!(
            height > self.height || self.height == 0,
            "heights only move forward"
        );
        self.keeper = VoteKeeper::new(validators.validators().iter().map(|v| v.power).collect());
        self.validators = validators;
        self.proposers.clear();
        self.height = height;
        self.proposals.clear();
        self.decided = None;
        let resume = resume.unwrap_or_default();
        self.locked = resume.locked;
        self.valid = resume.locked;
        self.start_round(resume.round, effects);
        if let Some(own) = resume
            .last_vote
            .filter(|own| own.vote.height == height && own.vote.round == resume.round)
        {
            self.keeper.add(own);
            self.step = match own.vote.kind {
                VoteKind::Prevote => Step::Prevote,
                VoteKind::Precommit => Step::Precommit,
            };
        }
        self.process(resume.round, effects);
    }

    /// StartRound (L11-21).
    fn start_round(&mut self, round: Round, effects: &mut Vec<Effect>) {
        self.round = round;
        self.step = Step::Propose;
        self.prevote_timeout_scheduled = false;
        self.polka_seen = false;
        self.precommit_timeout_scheduled = false;
        self.proposed = false;
        if self.me.is_some() && self.proposer(round) == self.me.expect("checked") {
            match self.valid {
                Some((valid_round, value)) => self.propose(value, Some(valid_round), effects),
                None => effects.push(Effect::GetValue {
                    height: self.height,
                    round,
                }),
            }
        }
        self.schedule(TimeoutKind::Propose, effects);
    }

    fn propose(&mut self, value: ValueId, pol_round: Option<Round>, effects: &mut Vec<Effect>) {
        let proposer = self.me.expect("only validators propose");
        self.proposed = true;
        effects.push(Effect::Propose(Proposal {
            height: self.height,
            round: self.round,
            value,
            pol_round,
            proposer,
        }));
    }

    fn schedule(&self, kind: TimeoutKind, effects: &mut Vec<Effect>) {
        effects.push(Effect::ScheduleTimeout {
            timeout: Timeout {
                kind,
                height: self.height,
                round: self.round,
            },
            duration_ms: self.params.duration_ms(kind, self.round),
        });
    }

    fn vote(&mut self, kind: VoteKind, value: Option<ValueId>, effects: &mut Vec<Effect>) {
        self.step = match kind {
            VoteKind::Prevote => Step::Prevote,
            VoteKind::Precommit => Step::Precommit,
        };
        if let Some(validator) = self.me {
            effects.push(Effect::Vote(Vote {
                kind,
                height: self.height,
                round: self.round,
                value,
                validator,
            }));
        }
    }

    fn on_value(
        &mut self,
        height: Height,
        round: Round,
        value: ValueId,
        effects: &mut Vec<Effect>,
    ) {
        let ours = self.me.is_some_and(|me| {
            self.height == height && self.round == round && self.proposer(round) == me
        });
        if ours && self.step == Step::Propose && !self.proposed {
            self.propose(value, None, effects);
        }
    }

    fn on_proposal(&mut self, signed: SignedProposal, valid: bool, effects: &mut Vec<Effect>) {
        let proposal = signed.proposal;
        if proposal.height != self.height
            || self.decided.is_some()
            || proposal.round > self.round + MAX_ROUNDS_AHEAD
            || proposal.pol_round.is_some_and(|pol| pol >= proposal.round)
            || self.proposer(proposal.round) != proposal.proposer
        {
            return;
        }
        let held = self.proposals.entry(proposal.round).or_default();
        // The first proposal drives prevotes (L22, L28); later different ones are the proposer's
        // equivocation, kept (a few) only so that a quorum for one of them can be decided.
        if held.len() >= MAX_PROPOSALS_PER_ROUND || held.iter().any(|(p, _)| p.proposal == proposal)
        {
            return;
        }
        held.push((signed, valid));
        self.keeper.note_sender(proposal.round, proposal.proposer);
        self.process(proposal.round, effects);
    }

    fn on_vote(&mut self, signed: SignedVote, effects: &mut Vec<Effect>) {
        let vote = signed.vote;
        if vote.height != self.height || vote.round > self.round + MAX_ROUNDS_AHEAD {
            return;
        }
        match self.keeper.add(signed) {
            AddOutcome::Added => {
                if self.decided.is_none() {
                    self.process(vote.round, effects);
                }
            }
            AddOutcome::Duplicate => {}
            AddOutcome::Equivocation(evidence) => effects.push(Effect::Evidence(evidence)),
        }
    }

    fn on_commit(
        &mut self,
        signed: SignedProposal,
        precommits: Vec<SignedVote>,
        effects: &mut Vec<Effect>,
    ) {
        let proposal = signed.proposal;
        if proposal.height != self.height || self.decided.is_some() {
            return;
        }
        let mut counted = vec![false; self.validators.len()];
        let mut power = 0;
        let mut commit = Vec::new();
        for signed_vote in precommits {
            let vote = signed_vote.vote;
            let index = vote.validator as usize;
            let matches = vote.kind == VoteKind::Precommit
                && vote.height == proposal.height
                && vote.round == proposal.round
                && vote.value == Some(proposal.value);
            if matches && index < counted.len() && !counted[index] {
                counted[index] = true;
                power += self.validators.power(vote.validator);
                commit.push(signed_vote);
            }
        }
        if !self.validators.is_quorum(power) {
            return;
        }
        self.decided = Some((proposal.round, proposal.value));
        self.step = Step::Commit;
        let held = self.proposals.entry(proposal.round).or_default();
        if !held.iter().any(|(p, _)| p.proposal == proposal) {
            held.push((signed, true));
        }
        effects.push(Effect::Decide {
            height: self.height,
            round: proposal.round,
            value: proposal.value,
            commit,
        });
    }

    fn on_timeout(&mut self, timeout: Timeout, effects: &mut Vec<Effect>) {
        if timeout.height != self.height || timeout.round != self.round || self.decided.is_some() {
            return;
        }
        match (timeout.kind, self.step) {
            (TimeoutKind::Propose, Step::Propose) => self.vote(VoteKind::Prevote, None, effects), // L57-60
            (TimeoutKind::Prevote, Step::Prevote) => self.vote(VoteKind::Precommit, None, effects), // L61-64
            (TimeoutKind::Precommit, _) => self.start_round(self.round + 1, effects), // L65-67
            _ => return,
        }
        self.process(self.round, effects);
    }

    /// A valid proposal of `round` whose value has a quorum of `kind` votes in that round.
    fn proposal_with_quorum(&self, round: Round, kind: VoteKind) -> Option<ValueId> {
        self.proposals
            .get(&round)?
            .iter()
            .filter(|(_, valid)| *valid)
            .map(|(signed, _)| signed.proposal.value)
            .find(|value| {
                self.validators
                    .is_quorum(self.keeper.power_for(round, kind, Some(*value)))
            })
    }

    /// Applies every rule that the latest input may have enabled, until none fires.
    fn process(&mut self, message_round: Round, effects: &mut Vec<Effect>) {
        loop {
            if self.decided.is_some() {
                return;
            }
            if self.try_decide(message_round, effects) || self.try_decide(self.round, effects) {
                return;
            }
            // L55-56: f+1 senders in a later round.
            if message_round > self.round
                && self
                    .validators
                    .is_one_third(self.keeper.round_power(message_round))
            {
                self.start_round(message_round, effects);
                continue;
            }
            if !self.apply_round_rules(effects) {
                return;
            }
        }
    }

    /// L49-54 for `round`; true if decided.
    fn try_decide(&mut self, round: Round, effects: &mut Vec<Effect>) -> bool {
        let Some(value) = self.proposal_with_quorum(round, VoteKind::Precommit) else {
            return false;
        };
        self.decided = Some((round, value));
        self.step = Step::Commit;
        effects.push(Effect::Decide {
            height: self.height,
            round,
            value,
            commit: self.keeper.precommits_for(round, value),
        });
        true
    }

    /// The rules of the current round; true if one fired.
    fn apply_round_rules(&mut self, effects: &mut Vec<Effect>) -> bool {
        let round = self.round;
        let prevotes_any = self.keeper.power_any(round, VoteKind::Prevote);
        if self.step == Step::Propose {
            let first = self
                .proposals
                .get(&round)
                .and_then(|held| held.first())
                .copied();
            if let Some((first, valid)) = first {
                let (value, pol_round) = (first.proposal.value, first.proposal.pol_round);
                let locked = if self.ignore_lock { None } else { self.locked };
                match pol_round {
                    None => {
                        // L22-27.
                        let acceptable =
                            valid && locked.is_none_or(|(_, locked_value)| locked_value == value);
                        self.vote(VoteKind::Prevote, acceptable.then_some(value), effects);
                        return true;
                    }
                    Some(pol) => {
                        // L28-33.
                        let polka = self.keeper.power_for(pol, VoteKind::Prevote, Some(value));
                        if self.validators.is_quorum(polka) {
                            let acceptable = valid
                                && locked.is_none_or(|(locked_round, locked_value)| {
                                    locked_round <= pol || locked_value == value
                                });
                            self.vote(VoteKind::Prevote, acceptable.then_some(value), effects);
                            return true;
                        }
                    }
                }
            }
        }
        if self.step == Step::Prevote
            && !self.prevote_timeout_scheduled
            && self.validators.is_quorum(prevotes_any)
        {
            // L34-35.
            self.prevote_timeout_scheduled = true;
            self.schedule(TimeoutKind::Prevote, effects);
            return true;
        }
        if self.step >= Step::Prevote && !self.polka_seen {
            if let Some(value) = self.proposal_with_quorum(round, VoteKind::Prevote) {
                // L36-43.
                self.polka_seen = true;
                if self.step == Step::Prevote {
                    self.locked = Some((round, value));
                    self.vote(VoteKind::Precommit, Some(value), effects);
                }
                self.valid = Some((round, value));
                return true;
            }
        }
        if self.step == Step::Prevote
            && self
                .validators
                .is_quorum(self.keeper.power_for(round, VoteKind::Prevote, None))
        {
            // L44-46.
            self.vote(VoteKind::Precommit, None, effects);
            return true;
        }
        if !self.precommit_timeout_scheduled
            && self
                .validators
                .is_quorum(self.keeper.power_any(round, VoteKind::Precommit))
        {
            // L47-48.
            self.precommit_timeout_scheduled = true;
            self.schedule(TimeoutKind::Precommit, effects);
            return true;
        }
        false
    }
}
