"""Store-and-forward: push the captures that wait to the hospital's PACS whenever it answers.

One pass takes the due captures oldest first, checks each against the store (a capture whose record fails the
chain's verification, or whose files no longer match its record, is held on the board, never sent as if
genuine: it waits, counted, with the reason, and `captures verify` names it), encodes it (edge.record.dicom), sends a batch
and records, after the server's confirmation, what was stored; what the server refused stays waiting, counted,
with one log line. `watch` repeats passes forever: at once while captures are due, every `poll` seconds when
none are, and with exponential back-off while the PACS does not answer or refuses everything.

The sender runs in a process of its own at idle priority (`idle_priority`, or the forwarding systemd unit):
the classification loop never waits for it, for the CPU, for the GIL or for a database lock (its state lives
in outbox.db). A SIGKILL or power cut at any point loses nothing (the capture stays in the store, unsent) and
duplicates nothing (a capture sent again has the same UIDs: the PACS keeps one instance).
"""

from __future__ import annotations

import logging
import os
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from edge.record import dicom
from edge.record.destination import DestinationError, parse_destination
from edge.record.outbox import Outbox
from edge.record.store import Capture, CaptureStore, StoreError, utc_timestamp
from edge.record.transport import Outcome, Refused, Transport, Unreachable, open_transport

if TYPE_CHECKING:
    from edge.config import DicomConfig, ForwardConfig

log = logging.getLogger(__name__)
HELD = "held on the board, not sent"  # the prefix of a refusal that is the board's, not the server's


@dataclass(frozen=True)
class Policy:
    batch: int = 4  # captures per request (3 instances each)
    retry: tuple[float, float] = (10.0, 900.0)  # back-off: first wait, longest wait (s)
    poll: float = 30.0  # how often to look for new captures when none wait (s)


@dataclass
class Pass:
    """What one pass did."""

    sent: int = 0
    refused: int = 0  # captures refused (by the server, or held on the board) in this pass
    waiting: int = 0  # captures still waiting for this destination after the pass
    error: str | None = None  # why the pass stopped early: the PACS did not answer, or refused a whole request
    unreachable: bool = False
    instances: int = 0  # instances the server confirmed
    bytes: int = 0  # pixel data sent, for throughput figures
    refused_uuids: list[str] = field(default_factory=list)


def idle_priority() -> str:
    """Run this process (and the threads it starts later) only on CPU time nothing else wants."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "SCHED_IDLE"
    except (OSError, AttributeError):
        os.nice(19 - os.nice(0))
        return "nice 19"


class Sender:
    def __init__(self, store: CaptureStore, outbox: Outbox, transport: Transport, station: dicom.Station,
                 policy: Policy = Policy()):
        self.store, self.outbox, self.transport, self.station, self.policy = store, outbox, transport, station, policy
        self.destination = transport.name

    def run_once(self, limit: int | None = None, stop: threading.Event | None = None, now: bool = False) -> Pass:
        """Send the captures due (at most `limit`), in batches, until done, stopped, or the PACS fails. `now`: every
        waiting capture, also those refused whose back-off has not run out (an operator's "send now", e.g. after
        fixing the credentials)."""
        encoder = dicom.Encoder(self.store, self.station)
        problems = self._problems()
        queue = self.outbox.queue(self.store.list(), self.destination)
        due = (queue.waiting if now else queue.due(utc_timestamp()))[:limit]
        result = Pass()
        for start in range(0, len(due), self.policy.batch):
            if stop is not None and stop.is_set():
                break
            if not self._batch(due[start:start + self.policy.batch], encoder, problems, result):
                break
        result.waiting = len(self.outbox.queue(self.store.list(), self.destination).waiting)
        return result

    def _problems(self) -> dict[int, str]:
        """What the chain says is wrong, by capture id (edited, inserted, reordered records): never sent as genuine."""
        found: dict[int, list[str]] = {}
        for p in self.store.audit(files=False).problems:
            if p.id is not None:
                found.setdefault(p.id, []).append(p.text)
        return {i: "; ".join(texts) for i, texts in found.items()}

    def _batch(self, batch: list[Capture], encoder: dicom.Encoder, problems: dict[int, str], result: Pass) -> bool:
        """Send one batch and record the outcome; False when the pass must stop (no answer, whole refusal)."""
        encoded, held = {}, {}
        for cap in batch:
            try:
                if cap.id in problems:
                    raise StoreError(f"the record fails verification: {problems[cap.id]}")
                encoded[cap.uuid] = encoder(cap)
            except (StoreError, ValueError) as e:
                held[cap.uuid] = f"{HELD}: {getattr(e, 'why', e)}"
        if held:
            self._refused(held, batch, result)
        if not encoded:
            return True
        try:
            outcome = self.transport.send([ds for inst in encoded.values() for ds in inst])
        except Unreachable as e:
            result.error, result.unreachable = f"{self.destination} does not answer: {e}", True
            return False
        except Refused as e:
            result.error = f"{self.destination} refused {len(encoded)} capture(s): {e}"
            log.warning("%s; kept for retry", result.error)
            self.outbox.mark_refused(self.destination, {u: str(e) for u in encoded}, self.policy.retry)
            result.refused += len(encoded)
            return False
        self._record(outcome, encoded, batch, result)
        return True

    def _record(self, outcome: Outcome, encoded: dict[str, dicom.Instances], batch: list[Capture],
                result: Pass) -> None:
        sent, refused = [], {}
        for u, inst in encoded.items():
            missing = [uid for uid in inst.sop_uids if uid not in outcome.stored]
            if not missing:
                sent.append(u)
                result.instances += 3
                result.bytes += sum(len(ds.PixelData) for ds in (inst.frame, inst.overlay))
            else:
                refused[u] = "; ".join(sorted({outcome.failed.get(uid, "instance not confirmed by the server")
                                               for uid in missing}))
        if sent:
            self.outbox.mark_sent(self.destination, sent)
            result.sent += len(sent)
        if refused:
            self._refused(refused, batch, result)

    def _refused(self, reasons: dict[str, str], batch: list[Capture], result: Pass) -> None:
        self.outbox.mark_refused(self.destination, reasons, self.policy.retry)
        known = self.outbox.refusals(self.destination)
        for cap in batch:
            if cap.uuid in reasons:
                r = known[cap.uuid]
                log.warning("capture %s (#%d) not sent to %s: %s; kept, attempt %d, next try after %s", cap.uuid,
                            cap.id, self.destination, reasons[cap.uuid], r.attempts, r.next_utc)
                result.refused_uuids.append(cap.uuid)
        result.refused += len(reasons)

    def watch(self, stop: threading.Event) -> None:
        """Pass after pass until `stop` is set: back-off while the PACS fails, `poll` while nothing is due."""
        failures = 0
        while not stop.is_set():
            p = self.run_once(stop=stop)
            if p.sent or p.refused:
                log.info("sent %d capture(s) to %s, %d refused, %d waiting", p.sent, self.destination, p.refused,
                         p.waiting)
            if p.error:
                failures += 1
                wait = min(self.policy.retry[1], self.policy.retry[0] * 2 ** min(failures - 1, 30))
                wait *= random.uniform(0.8, 1.2)  # a fleet of boards does not retry in step
                log.warning("%s; %d waiting, next try in %.0f s", p.error, p.waiting, wait)
            else:
                failures = 0
                wait = self._until_due()
            stop.wait(wait)

    def _until_due(self) -> float:
        """Seconds until a capture is due: 0 if one is now, else the earliest refused capture's next try or `poll`."""
        queue = self.outbox.queue(self.store.list(), self.destination)
        now = datetime.now(timezone.utc)
        if queue.due(utc_timestamp(now)):
            return 0.0
        nexts = [datetime.strptime(r.next_utc, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
                 for r in queue.refused.values()]
        soonest = min([(t - now).total_seconds() for t in nexts], default=self.policy.poll)
        return max(0.5, min(self.policy.poll, soonest))


def station_for(cfg: DicomConfig | None) -> dicom.Station:
    """The DICOM description of this board from the config's dicom section (None: the defaults)."""
    return dicom.Station() if cfg is None else dicom.Station(cfg.institution, cfg.patient_id_issuer, cfg.dermatoscope)


def connect(cfg: ForwardConfig) -> Transport:
    """The transport to forward.url: credentials read (and checked 0600) here, never logged; CredentialsError or
    DestinationError with one line when something is wrong."""
    from edge.record.credentials import load

    dest = parse_destination(cfg.url)
    creds = load(cfg.credentials) if cfg.credentials else None
    if cfg.ca_file and not os.path.isfile(cfg.ca_file):
        raise DestinationError(f"forward.ca_file {cfg.ca_file}: not a readable file")
    return open_transport(dest, creds, cfg.ca_file, cfg.timeout_seconds, cfg.calling_aet)


def policy_for(cfg: ForwardConfig) -> Policy:
    return Policy(cfg.batch, (cfg.retry_min_seconds, cfg.retry_max_seconds), cfg.poll_seconds)
