"""Post what reviewers decided, wherever they decided it (Slack, dashboard, CLI): the outbox.

`core.agent.run.decide` queues one delivery row per decided answer and NOTIFYs. The bot claims
rows for surface 'slack' one at a time and posts each inside the claiming transaction, so two
bot processes never post the same row. A post that fails for a passing reason (network, Slack
busy or down) puts the row back for a later round; one that keeps failing is given up after
`MAX_ATTEMPTS` rounds. Slack refusing for good (archived channel, bot removed:
`PERMANENT_ERRORS`) is final at once. Either way the reviewers are told
under the review card that the asker never got it. The same loop takes up the questions a
stopped bot left waiting (`answering.answer_waiting`), resumes reviews whose deciding process
died (`run.resume_decided`) and posts review cards a failed post left out
(`reviews.post_missing_cards`), at start-up and on every round after."""
from __future__ import annotations

import logging
import threading
import time

import psycopg
from psycopg import sql
from slack_sdk.errors import SlackApiError

from bot import answering, blocks, posting, reviews, store
from bot.deps import Deps
from core import db, feedback
from core.agent import run

logger = logging.getLogger(__name__)

EVENT_MEMORY_S = 24 * 3600   # Slack retries within minutes; a day of event ids is plenty
# Failed rounds before a row is given up: ten minutes or more with a round every 30 s (a new
# delivery or a decision in Slack starts a round too).
MAX_ATTEMPTS = 20

# Slack's refusals that another try will not change (chat.postMessage's documented errors).
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "is_archived", "not_in_channel", "account_inactive", "msg_too_long", "no_text",
    "invalid_blocks", "invalid_blocks_format", "too_many_attachments", "no_permission", "restricted_action",
    "restricted_action_read_only_channel", "restricted_action_thread_only_channel",
    "restricted_action_non_threadable_channel", "cannot_reply_to_message", "msg_blocks_too_long",
    "team_access_not_granted", "ekm_access_denied",
})


def drain(deps: Deps) -> int:
    """Post every queued Slack delivery, oldest first (those that failed before last); returns
    how many were taken. Raises on a passing failure, leaving that row (and the rest) queued for
    a later round."""
    taken = 0
    while True:
        posted: tuple[store.SlackAnswer, feedback.Answer] | None = None
        with db.connection() as conn:
            items = feedback.claim_deliveries(conn, "slack", limit=1)
            if not items:
                return taken
            item = items[0]
            where, answer = store.for_answer(conn, item.answer_id), feedback.get_answer(conn, item.answer_id)
            if answer is None:  # not expected: deleting an answer deletes its delivery
                logger.error("answer %s is gone; its %s is not posted", item.answer_id, item.kind)
            elif where is None:  # a Slack question is linked to its answer as the answer is recorded
                logger.error("the %s for answer %s is not posted: no Slack question of it is on record",
                             item.kind, item.answer_id)
            else:
                try:
                    posted = (where, answer) if deliver(deps, conn, item, where, answer) else None
                except (SlackApiError, OSError) as e:   # Slack busy or down, or the network (URLError, timeout)
                    failures = feedback.retry_delivery(conn, item.id, give_up_after=MAX_ATTEMPTS)
                    if failures is not None:
                        conn.commit()   # the row goes back, counted, even though this round ends here
                        if failures == 1:   # meanwhile the card shows the decision: not open to other reviewers
                            _redraw_card(deps, where, answer)
                        raise
                    logger.error("giving up on the %s for answer %s after %d failed rounds: %s",
                                 item.kind, item.answer_id, MAX_ATTEMPTS, e)
                    _report_undelivered(deps, conn, where, answer, item,
                                        f"posting it failed {MAX_ATTEMPTS} times ({_code(e)})")
        if posted:   # the claim is committed: a failure from here on must not post it again
            _after_delivery(deps, *posted)
        taken += 1


def deliver(deps: Deps, conn: psycopg.Connection, item: feedback.Delivery, where: store.SlackAnswer,
            answer: feedback.Answer) -> bool:
    """Post one delivery in the asker's thread; True when posted, for `_after_delivery` once the
    claim is committed. Slack refusing for good (`PERMANENT_ERRORS`) is final: logged, reported,
    and the row is done (False). Raises `SlackApiError` for any other refusal, `OSError` for the network."""
    messages = (blocks.answer_messages(item.answer_id, item.text, answer.sources) if item.kind == "answer"
                else [blocks.note(item.text)])
    try:
        first = posting.show(deps.client, deps.throttle, channel=where.channel_id, thread_ts=where.thread_ts,
                             ts=None, messages=messages)
    except SlackApiError as e:
        if e.response.get("error") not in PERMANENT_ERRORS:
            raise
        logger.exception("Slack refused the %s for answer %s for good; not retrying", item.kind, item.answer_id)
        _report_undelivered(deps, conn, where, answer, item, f"Slack refused to post it in their thread ({_code(e)})")
        return False
    store.set_delivered(conn, item.answer_id, first or "")
    return True


def _after_delivery(deps: Deps, where: store.SlackAnswer, answer: feedback.Answer) -> None:
    """The review note above the delivered decision stops promising it "once it's approved", and
    the review card loses its buttons: each on its own, so one failing leaves the other done."""
    if where.reply_ts is not None:
        try:
            posting.replace(deps.client, deps.throttle, channel=where.channel_id, ts=where.reply_ts,
                            message=blocks.note(run.REVIEW_DONE))
        except Exception:
            logger.exception("could not update the review note above answer %s", answer.id)
    _redraw_card(deps, where, answer)


def _redraw_card(deps: Deps, where: store.SlackAnswer, answer: feedback.Answer) -> None:
    try:
        with db.connection() as conn:
            reviews.redraw_card(deps.client, deps.throttle, conn, where, answer, deps.settings)
    except Exception:
        logger.exception("could not redraw the review card of answer %s", answer.id)


def _code(e: Exception) -> str:
    return f"`{e.response.get('error')}`" if isinstance(e, SlackApiError) else str(e)


def _report_undelivered(deps: Deps, conn: psycopg.Connection, where: store.SlackAnswer, answer: feedback.Answer,
                        item: feedback.Delivery, why: str) -> None:
    try:
        reviews.report_undelivered(deps.client, deps.throttle, conn, where, answer, item.kind, why,
                                   deps.settings)
    except Exception:  # the row is final either way; the log has it
        logger.exception("could not tell the reviewers that answer %s was not delivered", item.answer_id)


class DeliveryLoop:
    """A background thread in the bot process: LISTENs for new deliveries and drains at once,
    and drains every `poll_s` anyway (a missed notification, a row whose post failed); resumes
    reviews left half-decided and takes up waiting questions each time."""

    def __init__(self, deps: Deps, *, poll_s: float = 30.0, url: str | None = None) -> None:
        self.deps = deps
        self.poll_s = poll_s
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deliveries", daemon=True)

    def start(self) -> DeliveryLoop:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                with db.listening_connection(self._url or db.database_url()) as conn:
                    # LISTEN before the first drain: a row queued in between is seen by one or the other.
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(feedback.DELIVERY_CHANNEL)))
                    backoff = 1.0
                    self._listen(conn)
            except Exception:
                logger.exception("delivery loop lost its database connection; retrying in %.0fs", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def _listen(self, conn: psycopg.Connection) -> None:
        forget_at = cards_at = 0.0
        while not self._stop.is_set():
            self._resume_decided()
            self._drain()
            self._answer_waiting()
            if time.monotonic() >= cards_at:   # paced: a review channel Slack refuses is not tried on every wake-up
                self._post_missing_cards()
                self._remind_overdue_reviews()
                cards_at = time.monotonic() + self.poll_s
            if time.monotonic() >= forget_at:
                store.forget_events(conn, EVENT_MEMORY_S)
                forget_at = time.monotonic() + 3600
            deadline = time.monotonic() + self.poll_s
            # Short waits, so stop() is quick; any notification ends the wait.
            while not self._stop.is_set() and time.monotonic() < deadline:
                if list(conn.notifies(timeout=0.5, stop_after=1)):
                    break

    def _drain(self) -> None:
        try:
            drain(self.deps)
        except Exception:
            logger.exception("posting deliveries failed; trying again on the next wake-up")

    def _resume_decided(self) -> None:
        try:
            run.resume_decided(context=self.deps.agent_context())
        except Exception:
            logger.exception("resuming decided reviews failed; trying again on the next wake-up")

    def _post_missing_cards(self) -> None:
        try:
            reviews.post_missing_cards(self.deps.client, self.deps.settings)
        except Exception:
            logger.exception("posting missing review cards failed; trying again on the next wake-up")

    def _remind_overdue_reviews(self) -> None:
        try:
            reviews.remind_overdue(self.deps.client, self.deps.settings)
        except Exception:
            logger.exception("reminding reviewers of overdue reviews failed; trying again later")

    def _answer_waiting(self) -> None:
        try:
            answering.answer_waiting(self.deps.client, self.deps)
        except Exception:
            logger.exception("taking up waiting questions failed; trying again on the next wake-up")
