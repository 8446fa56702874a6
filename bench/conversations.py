"""The conversation benchmark: ingestion rate and view/search latency at contact-center size.

    .venv/bin/python bench/conversations.py [--messages 1000000] [--conversations 100000]
        [--backend sqlite|postgresql|both] [--batch 500] [--repeat 50]

Per backend it loads a year of traffic — customers writing through SMS-like (threaded by
address) and email-like (threaded by headers) accounts of three projects — through
``Conversations.ingest`` in batches, the path a polled mailbox or a webhook burst takes.
Agents then work the backlog through the service API (reply, reply-and-close, take, close,
tag, star) so the views have the shapes of a real inbox: a small open backlog, a large
closed history. Finally it times every view with a typical filter, the flat message view
and searches, each as different agents.

Baselines measured in the same run: a bare batched INSERT of the same message rows into a
plain table (what the database alone does), and a ``SELECT 1`` through ``Store.read()``
(the floor of any view). See ``bench/README.md`` for how to read the figures.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from common import (
    Latency,
    Postgres,
    Progress,
    measure,
    percentile,
    print_latencies,
    say,
)

from tidings import (
    Account,
    Address,
    Capabilities,
    Channel,
    ChannelSettings,
    InboundMessage,
    OutboundMessage,
    SendResult,
    ThreadHeaders,
    Threading,
    hookimpl,
)
from tidings.clock import ManualClock
from tidings.conversations import Actor, Conversations, Draft, Filters, Role, View
from tidings.conversations.models import DateField, DateRange
from tidings.plugins import Plugins, load_plugins
from tidings.routing import add_agent
from tidings.runtime import freeze_startup_objects
from tidings.service.worker import compact_until_done
from tidings.store import Store, search

START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365)
END = START + YEAR
"""'Now' for the agents and the views: the end of the simulated year."""

# --- channels and accounts ---------------------------------------------------------------


class NumberSettings(ChannelSettings):
    number: str


class MailboxSettings(ChannelSettings):
    address: str


class BenchSms(Channel):
    """An SMS-like channel: one conversation per customer number and account."""

    name = "bench_sms"
    kind = "sms"
    settings_model = NumberSettings
    capabilities = Capabilities(threading=Threading.ADDRESS)

    def own_address(self, account: Account[Any]) -> Address:
        return Address.phone(account.settings.number)

    @hookimpl
    def send(self, account: Account[Any], message: OutboundMessage) -> SendResult:
        return SendResult(provider_id=message.id)


class BenchMail(Channel):
    """An email-like channel: threads by Message-ID / In-Reply-To / References."""

    name = "bench_mail"
    kind = "email"
    settings_model = MailboxSettings
    capabilities = Capabilities(threading=Threading.MESSAGE_HEADERS, subject=True, cc_bcc=True)

    def own_address(self, account: Account[Any]) -> Address:
        return Address.email(account.settings.address)

    @hookimpl
    def send(self, account: Account[Any], message: OutboundMessage) -> SendResult:
        return SendResult(provider_id=message.id)


class BenchChannels:
    @hookimpl
    def register_channels(self) -> list[Channel]:
        return [BenchSms(), BenchMail()]


@dataclass(frozen=True)
class AccountPlan:
    id: str
    project: str
    email: bool
    own: str
    weight: float
    """Share of the conversations that arrive through this account."""
    polish: float
    """Share of its customers writing in Polish."""

    @property
    def kind(self) -> str:
        return "email" if self.email else "sms"

    def account(self) -> Account[Any]:
        channel: type[Channel] = BenchMail if self.email else BenchSms
        field_name = "address" if self.email else "number"
        return Account[Any](
            id=self.id,
            channel=channel.name,
            project=self.project,
            settings=channel.settings_model.model_validate({field_name: self.own}),
        )


ACCOUNTS = (
    AccountPlan("support-sms-pl", "support", False, "+48221000000", 0.28, 1.0),
    AccountPlan("support-sms-en", "support", False, "+442071000000", 0.07, 0.0),
    AccountPlan("support-mail", "support", True, "pomoc@sklep.example", 0.25, 0.7),
    AccountPlan("sales-sms", "sales", False, "+48221000099", 0.10, 0.9),
    AccountPlan("sales-mail", "sales", True, "sprzedaz@sklep.example", 0.12, 0.6),
    AccountPlan("billing-mail", "billing", True, "faktury@sklep.example", 0.18, 0.8),
)
PROJECTS = ("support", "sales", "billing")

# --- words -------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


# Ordered roughly by how often a contact center sees them: the draw is Zipf-shaped over this
# order, so early words are in a large share of messages and late ones in few.
POLISH_WORDS = _words("""
nie się na i w to jest z do że czy o mam po jak ale proszę dzień dobry już mi tak bo
zamówienie paczka jeszcze dziękuję kiedy przesyłka faktura pozdrawiam numer zwrot
bardzo możliwe sprawa pieniądze termin dostawa kurier reklamacja pytanie problem odpowiedź
sklep konto płatność przelew adres zmiana telefon towar produkt cena rabat kod hasło
wczoraj dzisiaj jutro tydzień miesiąc godzina tydzień potwierdzenie anulować wysłać
otrzymać zapłacić sprawdzić informacja prośba status dokument umowa rachunek korekta
paragon gwarancja naprawa serwis uszkodzony brakuje błąd wymiana zwrócić odesłać kolor
rozmiar sztuka model wersja aplikacja strona logowanie newsletter promocja kupon karta
blik pobranie paczkomat odbiór punkt magazyn opóźnienie czekam pilne niestety szybko
""")

ENGLISH_WORDS = _words("""
the to i a my and is of for it you have order not on please can this hi thanks with be
was delivery parcel when refund invoice help still account payment received number
thank would like need item return address could an change tracking week days package
issue problem missing wrong damaged replacement exchange size colour price discount code
password login app website card charged twice cancel cancelled confirm confirmation
status update urgent waiting yesterday today tomorrow hours support service warranty
repair broken receipt subscription newsletter unsubscribe voucher coupon shipping courier
""")

RARE_WORDS = _words("""
hulajnoga odkurzacz ekspres termos plecak namiot rower kask rolki deskorolka latarka
trampoliny dmuchawa kosiarka wiertarka szlifierka akwarium terrarium metronom ukulele
kayak trampoline lawnmower dehumidifier harmonica telescope microscope sextant gazebo
""")

FIRST_NAMES_PL = _words("""
Anna Maria Katarzyna Małgorzata Agnieszka Barbara Ewa Krystyna Elżbieta Magdalena Joanna
Zofia Monika Teresa Danuta Natalia Aleksandra Karolina Marta Beata Piotr Krzysztof Andrzej
Tomasz Jan Paweł Marcin Michał Marek Grzegorz Józef Łukasz Adam Zbigniew Jerzy Tadeusz
Mateusz Dariusz Mariusz Wojciech Żaneta Jakub Kamil Szymon Bartosz
""")
LAST_NAMES_PL = _words("""
Nowak Kowalski Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski Zieliński Szymański
Woźniak Dąbrowski Kozłowski Jankowski Mazur Wojciechowski Kwiatkowski Krawczyk Kaczmarek
Piotrowski Grabowski Zając Pawłowski Michalski Król Wieczorek Jabłoński Wróbel Nowakowski
Majewski Olszewski Stępień Malinowski Jaworski Adamczyk Dudek Nowicki Pawlak Górski Witkowski
Walczak Sikora Baran Rutkowski Michalak Szewczyk Ostrowski Tomaszewski Pietrzak Marciniak
""")
FIRST_NAMES_EN = _words("""
Oliver George Harry Jack Jacob Noah Charlie Thomas Oscar William James Olivia Amelia Isla
Emily Ava Lily Mia Sophia Isabella Grace Emma Sarah Laura Daniel David Michael John Robert
""")
LAST_NAMES_EN = _words("""
Smith Jones Williams Taylor Brown Davies Evans Wilson Thomas Johnson Roberts Robinson
Thompson Wright Walker White Edwards Hughes Green Hall Lewis Harris Clarke Patel Jackson
""")

SUBJECTS_PL = (
    "Reklamacja zamówienia {n}", "Zwrot towaru z zamówienia {n}", "Faktura do zamówienia {n}",
    "Korekta faktury {n}", "Pytanie o dostawę {n}", "Brak przesyłki {n}",
    "Zmiana adresu dostawy {n}", "Płatność za zamówienie {n}", "Uszkodzona paczka {n}",
    "Oferta dla firmy {n}", "Pytanie o produkt {n}", "Rabat przy zamówieniu {n}",
)  # fmt: skip
SUBJECTS_EN = (
    "Order {n} not delivered", "Refund for order {n}", "Invoice for order {n}",
    "Damaged parcel {n}", "Question about order {n}", "Wrong item in order {n}",
    "Business quote {n}", "Change delivery address {n}",
)  # fmt: skip
TAGS = ("reklamacja", "faktura", "zwrot", "dostawa", "pilne", "vip", "b2b", "spam", "opinia",
        "płatność", "gwarancja", "newsletter")  # fmt: skip


def zipf_cumulative(n: int, s: float = 1.0) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, n + 1)))


class Words:
    """Message text drawn from a Zipf-shaped vocabulary, so search has realistic selectivity:
    common words hit a large share of messages, rare words and order numbers a handful."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pl = POLISH_WORDS
        self.en = ENGLISH_WORDS
        self.pl_cum = zipf_cumulative(len(self.pl))
        self.en_cum = zipf_cumulative(len(self.en))

    def text(self, polish: bool, length: int) -> str:
        vocab, cum = (self.pl, self.pl_cum) if polish else (self.en, self.en_cum)
        words = self.rng.choices(vocab, cum_weights=cum, k=length)
        roll = self.rng.random()
        if roll < 0.25:
            word = "zamówienie" if polish else "order"
            words.append(f"{word} {self.rng.randrange(100_000, 1_000_000)}")
        elif roll < 0.27:
            words.append(self.rng.choice(RARE_WORDS))
        return " ".join(words).capitalize() + "."


# --- the plan: who writes when -----------------------------------------------------------


@dataclass
class ConversationPlan:
    index: int
    account: AccountPlan
    customer: Address
    polish: bool
    size: int
    times: list[datetime]
    subject: str | None
    cid: int = 0
    """The conversation id in the store, known after ingestion."""


@dataclass
class Plan:
    conversations: list[ConversationPlan]
    messages: int
    stream: list[tuple[datetime, int, int]] = field(default_factory=list)
    """Every inbound message as (sent at, conversation index, position in conversation)."""


def _sizes(rng: random.Random, conversations: int, messages: int) -> list[int]:
    """Messages per conversation: log-normal (most short, a few very long), summing exactly
    to ``messages``."""
    mean = messages / conversations
    sigma = 1.0
    mu = math.log(max(mean, 1.0)) - sigma * sigma / 2
    sizes = [max(1, round(rng.lognormvariate(mu, sigma))) for _ in range(conversations)]
    diff = messages - sum(sizes)
    while diff != 0:
        i = rng.randrange(conversations)
        if diff > 0:
            sizes[i] += 1
            diff -= 1
        elif sizes[i] > 1:
            sizes[i] -= 1
            diff += 1
    return sizes


def make_plan(seed: int, conversations: int, messages: int) -> Plan:
    if messages < conversations:
        raise SystemExit("--messages must be at least --conversations")
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    sizes = _sizes(rng, conversations, messages)
    weights = list(itertools.accumulate(a.weight for a in ACCOUNTS))
    email_customers: list[tuple[Address, bool]] = []
    used_phones: set[str] = set()
    plans: list[ConversationPlan] = []
    for i, size in enumerate(sizes):
        acct = ACCOUNTS[bisect.bisect(weights, rng.random() * weights[-1])]
        polish = rng.random() < acct.polish
        first = rng.choice(FIRST_NAMES_PL if polish else FIRST_NAMES_EN)
        last = rng.choice(LAST_NAMES_PL if polish else LAST_NAMES_EN)
        if polish and first.endswith("a") and last.endswith("ski"):
            last = last[:-1] + "a"  # Kowalski → Kowalska
        if acct.email:
            if email_customers and rng.random() < 0.3:  # a returning customer
                customer, polish = rng.choice(email_customers)
            else:
                local = f"{first}.{last}{rng.randrange(1, 1000)}".lower()
                domain = rng.choice(("gmail.com", "wp.pl", "onet.pl", "o2.pl", "firma.pl",
                                     "outlook.com", "interia.pl"))  # fmt: skip
                customer = Address.email(f"{local}@{domain}", name=f"{first} {last}")
                email_customers.append((customer, polish))
            template = rng.choice(SUBJECTS_PL if polish else SUBJECTS_EN)
            subject: str | None = template.format(n=f"{rng.randrange(10**6):06d}-{i}")
            gap_hours = 20.0
        else:
            prefix = "+48" if acct.id != "support-sms-en" else "+447"
            while True:
                digits = "".join(rng.choices("0123456789", k=9))
                number = prefix + rng.choice("5678") + digits[1:]
                if number not in used_phones:
                    used_phones.add(number)
                    break
            named = rng.random() < 0.5  # some SMS providers or profiles give a name
            customer = Address.phone(number, name=f"{first} {last}" if named else None)
            subject = None
            gap_hours = 3.0
        begin = START + YEAR * rng.random() * 0.995
        times = [begin]
        for _ in range(size - 1):
            nxt = times[-1] + timedelta(hours=rng.expovariate(1.0 / gap_hours))
            times.append(min(nxt, END - timedelta(seconds=rng.randrange(60, 3600))))
        times.sort()
        plans.append(ConversationPlan(i, acct, customer, polish, size, times, subject))
    stream = [(t, p.index, k) for p in plans for k, t in enumerate(p.times)]
    stream.sort()
    return Plan(plans, messages, stream)


def message(plan: ConversationPlan, position: int, words: Words) -> InboundMessage:
    at = plan.times[position]
    if plan.account.email:
        domain = plan.customer.value.rpartition("@")[2]
        ids = [f"<c{plan.index}.{k}@{domain}>" for k in range(position + 1)]
        subject = plan.subject if position == 0 else f"Re: {plan.subject}"
        return InboundMessage(
            provider_id=ids[-1],
            sender=plan.customer,
            recipients=(Address.email(plan.account.own),),
            subject=subject,
            text=words.text(plan.polish, words.rng.randrange(8, 60)),
            sent_at=at,
            thread=ThreadHeaders(
                message_id=ids[-1], in_reply_to=tuple(ids[-2:-1]), references=tuple(ids[-11:-1])
            ),
        )
    return InboundMessage(
        provider_id=f"SM{plan.index:08d}x{position:05d}",
        sender=plan.customer,
        recipients=(Address.phone(plan.account.own),),
        text=words.text(plan.polish, words.rng.randrange(2, 25)),
        sent_at=at,
    )


def batches(plan: Plan, size: int, seed: int) -> Iterator[tuple[str, list[InboundMessage]]]:
    """The stream as each account would deliver it: in time order, ``size`` at a time."""
    words = Words(random.Random(seed + 1))  # noqa: S311 - test data, not secrets
    pending: dict[str, list[InboundMessage]] = {a.id: [] for a in ACCOUNTS}
    for _, index, position in plan.stream:
        conv = plan.conversations[index]
        buffer = pending[conv.account.id]
        buffer.append(message(conv, position, words))
        if len(buffer) >= size:
            yield conv.account.id, buffer
            pending[conv.account.id] = []
    for account_id, buffer in pending.items():
        if buffer:
            yield account_id, buffer


# --- agents --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Team:
    name: str
    size: int
    permissions: tuple[tuple[str, str], ...]


TEAMS = (
    Team("support", 14, (("support", "sms"), ("support", "email"))),
    Team("sales", 6, (("sales", "sms"), ("sales", "email"))),
    Team("billing", 5, (("billing", "email"),)),
    Team("email", 3, (("support", "email"), ("sales", "email"), ("billing", "email"))),
)
EVERYTHING = tuple((p, k) for p in PROJECTS for k in ("sms", "email"))


@dataclass
class Staff:
    agents: list[Actor]
    supervisors: list[Actor]

    def for_scope(self, project_id: int, kind: str) -> list[Actor]:
        return [a for a in self.agents if a.may_work_on(project_id, kind)]


async def make_staff(store: Store) -> Staff:
    agents: list[int] = []
    for team in TEAMS:
        for n in range(team.size):
            name = f"{team.name}{n + 1}"
            agent = await add_agent(store, name, permissions=team.permissions, clock=lambda: START)
            agents.append(agent)
    bosses = [
        await add_agent(store, f"supervisor{n + 1}", role=Role.SUPERVISOR, can_view_all=True,
                        permissions=EVERYTHING, clock=lambda: START)
        for n in range(2)
    ]  # fmt: skip
    svc = Conversations(store, load_plugins({}, entry_points_enabled=False), {})
    return Staff(
        agents=[await svc.actor(x) for x in agents],
        supervisors=[await svc.actor(x) for x in bosses],
    )


# --- loading -------------------------------------------------------------------------------


def service(store: Store, plugins: Plugins, clock: ManualClock) -> Conversations:
    return Conversations(store, plugins, {a.id: a.account() for a in ACCOUNTS}, clock=clock)


@dataclass
class Ingestion:
    messages: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    """CPU of this process during the timed calls (SQLite's work included, not a server's)."""
    batch_ms: list[float] = field(default_factory=list)
    stored: int = 0
    conversations: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_message(self) -> float:
        """Milliseconds of this process's CPU per message."""
        return 1000.0 * self.cpu_seconds / self.messages if self.messages else 0.0


async def ingest_all(svc: Conversations, clock: ManualClock, plan: Plan, args: Any) -> Ingestion:
    result = Ingestion()
    progress = Progress("ingested messages", plan.messages)
    for account_id, batch in batches(plan, args.batch, args.seed):
        clock.now = max(msg.sent_at for msg in batch) + timedelta(seconds=5)
        start, cpu = time.perf_counter(), time.process_time()
        stored = await svc.ingest(account_id, batch)
        elapsed = time.perf_counter() - start
        result.cpu_seconds += time.process_time() - cpu
        result.seconds += elapsed
        result.batch_ms.append(elapsed * 1000.0)
        result.messages += len(batch)
        result.stored += len(stored.stored)
        progress.update(result.messages, result.rate)
    progress.update(result.messages, result.rate, force=True)
    return result


_plain = sa.MetaData()
PLAIN = sa.Table(
    "bench_plain_messages",
    _plain,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.Integer, nullable=False),
    sa.Column("direction", sa.String(4), nullable=False),
    sa.Column("account_id", sa.String(100), nullable=False),
    sa.Column("provider_id", sa.String(998)),
    sa.Column("sender_key", sa.String(600), nullable=False),
    sa.Column("sender_name", sa.String(300), nullable=False),
    sa.Column("recipients", sa.JSON, nullable=False),
    sa.Column("subject", sa.String(998), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),
)


async def baseline_insert(store: Store, plan: Plan, args: Any) -> Ingestion:
    """The same message rows, batch for batch, into a plain table with only a primary key:
    what the database and driver alone cost, without threading, search or metrics."""
    result = Ingestion()
    async with store.engine.begin() as conn:
        await conn.run_sync(_plain.create_all)
    limit = min(args.baseline_messages, plan.messages)
    for account_id, batch in batches(plan, args.batch, args.seed):
        rows = [
            {"conversation_id": 0, "direction": "in", "account_id": account_id,
             "provider_id": msg.provider_id, "sender_key": msg.sender.key,
             "sender_name": msg.sender.name or "",
             "recipients": {"to": [a.key for a in msg.recipients], "cc": []},
             "subject": msg.subject or "", "text": msg.text, "sent_at": msg.sent_at,
             "created_at": msg.sent_at,
             "meta": {"message_id": msg.thread.message_id} if msg.thread.message_id else {}}
            for msg in batch
        ]  # fmt: skip
        start, cpu = time.perf_counter(), time.process_time()
        async with store.write() as conn:
            await conn.execute(sa.insert(PLAIN), rows)
        result.seconds += time.perf_counter() - start
        result.cpu_seconds += time.process_time() - cpu
        result.messages += len(rows)
        if result.messages >= limit:
            break
    async with store.engine.begin() as conn:
        await conn.run_sync(_plain.drop_all)
    return result


async def find_conversation_ids(store: Store, plan: Plan) -> int:
    """Map each planned conversation to its id through its first message's provider id."""
    by_account: dict[str, dict[str, ConversationPlan]] = {}
    words = Words(random.Random(0))  # noqa: S311 - only provider ids are used
    for conv in plan.conversations:
        first = message(conv, 0, words).provider_id
        by_account.setdefault(conv.account.id, {})[first] = conv
    m = sa.table("messages", sa.column("account_id"), sa.column("provider_id"),
                 sa.column("conversation_id"), sa.column("direction"))  # fmt: skip
    async with store.read() as conn:
        for account_id, wanted in by_account.items():
            keys = list(wanted)
            for i in range(0, len(keys), 1000):
                rows = await conn.execute(
                    sa.select(m.c.provider_id, m.c.conversation_id).where(
                        m.c.account_id == account_id, m.c.direction == "in",
                        m.c.provider_id.in_(keys[i : i + 1000]),
                    )
                )  # fmt: skip
                for provider_id, cid in rows:
                    wanted[provider_id].cid = int(cid)
        count = (await conn.execute(sa.text("SELECT count(*) FROM conversations"))).scalar_one()
    return int(count)


# --- agents at work ----------------------------------------------------------------------


@dataclass
class Work:
    actions: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


async def agents_work(
    store: Store, plugins: Plugins, plan: Plan, staff: Staff, project_ids: dict[str, int],
    args: Any,
) -> Work:  # fmt: skip
    """Work the year's backlog the way agents do, one service call per action.

    Old conversations are mostly closed (after a reply, or unanswered as spam), recent ones
    open: some taken, some answered and waiting, some still in the pool. A few are starred,
    a fifth tagged.
    """
    rng = random.Random(args.seed + 2)  # noqa: S311 - test data, not secrets
    jobs: list[tuple[ConversationPlan, Actor, str, list[str], bool, datetime]] = []
    for conv in plan.conversations:
        last = conv.times[-1]
        age = END - last
        closed = rng.random() < (0.95 if age > timedelta(days=7) else 0.35)
        if closed:
            how = "reply_close" if rng.random() < 0.8 else "close"
        else:
            how = rng.choice(("reply", "reply", "take", "pool", "pool"))
        team = staff.for_scope(project_ids[conv.account.project], conv.account.kind)
        # Zipf over the team: some agents carry more conversations than others.
        actor = rng.choices(team, cum_weights=zipf_cumulative(len(team), 0.7))[0]
        tags = rng.sample(TAGS[:8], rng.choice((1, 1, 2))) if rng.random() < 0.2 else []
        starred = rng.random() < (0.005 if closed else 0.03)
        at = min(last + timedelta(minutes=rng.expovariate(1 / 90.0)), END)
        jobs.append((conv, actor, how, tags, starred, at))
    work = Work()
    progress = Progress("agent actions (conversations)", len(jobs))
    clock_start = time.perf_counter()

    async def worker(queue: Iterator[tuple[ConversationPlan, Actor, str, list[str], bool,
                                           datetime]]) -> None:  # fmt: skip
        clock = ManualClock(START)
        svc = service(store, plugins, clock)
        for conv, actor, how, tags, starred, at in queue:
            clock.now = at
            if tags:
                await svc.tag(actor, conv.cid, add=tags)
                work.actions += 1
            if starred:
                await svc.star(actor, conv.cid)
                work.actions += 1
            text = "Dzień dobry, sprawdzamy to." if conv.polish else "Hello, we are on it."
            if how in ("reply", "reply_close"):
                await svc.send(actor, Draft(text=text), conversation_id=conv.cid,
                               close=how == "reply_close")  # fmt: skip
            elif how == "take":
                await svc.take(actor, conv.cid)
            elif how == "close":
                await svc.close(actor, conv.cid)
            if how != "pool":
                work.actions += 1
            work.counts[how] = work.counts.get(how, 0) + 1
            progress.update(sum(work.counts.values()))

    shared = iter(jobs)
    async with anyio.create_task_group() as tg:
        for _ in range(args.workers if store.dialect == "postgresql" else 1):
            tg.start_soon(worker, shared)
    work.seconds = time.perf_counter() - clock_start
    return work


# --- latency -------------------------------------------------------------------------------


async def latencies(
    store: Store, plugins: Plugins, plan: Plan, staff: Staff, args: Any
) -> tuple[Latency, list[Latency]]:
    svc = service(store, plugins, ManualClock(END))
    repeat = args.repeat
    agents = staff.agents
    bosses = staff.supervisors
    support = [a for a in agents if len(a.permissions) == 2 and a.may_work_on(1, "sms")]
    support = support or agents
    # A customer an agent looks up by the number they were told on the phone.
    sms_convs = [c for c in plan.conversations if not c.account.email]
    email_convs = [c for c in plan.conversations if c.account.email]
    pick = random.Random(args.seed + 3)  # noqa: S311 - test data, not secrets
    phones = [c.customer.value.removeprefix("+48") for c in pick.sample(sms_convs, 20)]
    mails = [c.customer.value.partition("@")[0] for c in pick.sample(email_convs, 20)]
    order_numbers = await _existing_order_numbers(store, 20)
    month = DateRange(field=DateField.STARTED, start=START + timedelta(days=150),
                      end=START + timedelta(days=181))  # fmt: skip
    last_week = DateRange(field=DateField.CLOSED, start=END - timedelta(days=7))

    def conv_view(
        actors: Sequence[Actor], view: View, make: Callable[[int], Filters] | None = None
    ) -> Callable[[int], Awaitable[int]]:
        async def run(i: int) -> int:
            actor = actors[i % len(actors)]
            filters = make(i) if make else Filters()
            return len(await svc.view(actor, view, filters))

        return run

    def flat_view(
        actors: Sequence[Actor], view: View, make: Callable[[int], Filters] | None = None
    ) -> Callable[[int], Awaitable[int]]:
        async def run(i: int) -> int:
            actor = actors[i % len(actors)]
            return len(await svc.messages(actor, view, make(i) if make else Filters()))

        return run

    async def select_one(_: int) -> int:
        async with store.read() as conn:
            return len((await conn.execute(sa.text("SELECT 1"))).all())

    baseline = await measure("SELECT 1 through Store.read()", select_one, repeat=repeat)
    cases: list[tuple[str, Callable[[int], Awaitable[int]]]] = [
        ("view mine (agent)", conv_view(agents, View.MINE)),
        ("view mine + tag 'reklamacja'", conv_view(agents, View.MINE,
                                                    lambda i: Filters(tags=("reklamacja",)))),
        ("view active (agent)", conv_view(agents, View.ACTIVE)),
        ("view active + project 'support' (support agent)",
         conv_view(support, View.ACTIVE, lambda i: Filters(project="support"))),
        ("view unassigned (agent)", conv_view(agents, View.UNASSIGNED)),
        ("view unassigned + kind email", conv_view(agents, View.UNASSIGNED,
                                                   lambda i: Filters(kind="email"))),
        ("view closed (agent)", conv_view(agents, View.CLOSED)),
        ("view closed + closed in the last 7 days",
         conv_view(agents, View.CLOSED, lambda i: Filters(dates=(last_week,)))),
        ("view all (supervisor)", conv_view(bosses, View.ALL)),
        ("view all + tag 'reklamacja'", conv_view(bosses, View.ALL,
                                                  lambda i: Filters(tags=("reklamacja",)))),
        ("view all + started in June", conv_view(bosses, View.ALL,
                                                 lambda i: Filters(dates=(month,)))),
        ("view all + assignee", conv_view(bosses, View.ALL,
                                          lambda i: Filters(assignee=agents[i % 10].id))),
        ("view all + participant phone digits (1 customer)",
         conv_view(bosses, View.ALL, lambda i: Filters(participant=phones[i % len(phones)]))),
        ("view all + participant email local part",
         conv_view(bosses, View.ALL, lambda i: Filters(participant=mails[i % len(mails)]))),
        ("view all + subject contains 'reklamacja'",
         conv_view(bosses, View.ALL, lambda i: Filters(subject="reklamacja"))),
        ("view all + project 'billing' + state closed",
         conv_view(bosses, View.ALL, lambda i: Filters(project="billing", state="closed"))),
        ("messages active (agent)", flat_view(agents, View.ACTIVE)),
        ("messages mine (agent)", flat_view(agents, View.MINE)),
        ("messages all + project 'sales' (supervisor)",
         flat_view(bosses, View.ALL, lambda i: Filters(project="sales"))),
        ("search all: common prefix 'zamów'",
         conv_view(bosses, View.ALL, lambda i: Filters(search="zamów"))),
        ("search all: common word 'paczka'",
         conv_view(bosses, View.ALL, lambda i: Filters(search="paczka"))),
        ("search all: rare order number",
         conv_view(bosses, View.ALL,
                   lambda i: Filters(search=order_numbers[i % len(order_numbers)]))),
        ("search all: rare word 'hulajnoga'",
         conv_view(bosses, View.ALL, lambda i: Filters(search="hulajnoga"))),
        ("search all: customer surname prefix 'kowalsk'",
         conv_view(bosses, View.ALL, lambda i: Filters(search="kowalsk"))),
        ("search all: customer full name 'anna nowak'",
         conv_view(bosses, View.ALL, lambda i: Filters(search="anna nowak"))),
        ("search all: two words 'faktura korekta'",
         conv_view(bosses, View.ALL, lambda i: Filters(search="faktura korekta"))),
        # Around the plans' crossover (1.2 % and 0.45 % of messages), where either plan
        # costs the most.
        ("search all: two words 'termin dostawa'",
         conv_view(bosses, View.ALL, lambda i: Filters(search="termin dostawa"))),
        ("search all: two words 'kurier paczkomat'",
         conv_view(bosses, View.ALL, lambda i: Filters(search="kurier paczkomat"))),
        ("search active (agent): 'faktur'",
         conv_view(agents, View.ACTIVE, lambda i: Filters(search="faktur"))),
        ("search closed (agent): 'zwrot'",
         conv_view(agents, View.CLOSED, lambda i: Filters(search="zwrot"))),
        ("search messages all: 'przesyłka'",
         flat_view(bosses, View.ALL, lambda i: Filters(search="przesyłka"))),
        ("search messages all: rare order number",
         flat_view(bosses, View.ALL,
                   lambda i: Filters(search=order_numbers[i % len(order_numbers)]))),
    ]  # fmt: skip
    only = args.only
    results = []
    for name, run in cases:
        if only and not any(o in name for o in only):
            continue
        results.append(await measure(name, run, repeat=repeat))
        r = results[-1]
        say(f"    {name}: p50 {r.p50:.1f} ms, p95 {r.p95:.1f} ms ({r.rows} rows)")
    return baseline, results


async def _existing_order_numbers(store: Store, n: int) -> list[str]:
    """Order numbers customers really wrote (so the rare search finds something)."""
    async with store.read() as conn:
        rows = await conn.execute(
            sa.text("SELECT text FROM messages WHERE direction = 'in' AND id % 97 = 0 LIMIT 2000")
        )
        found: list[str] = []
        for (text,) in rows:
            for word in text.split():
                token = word.strip(".")
                if len(token) == 6 and token.isdigit():
                    found.append(token)
        return found[:n] or ["123456"]


# --- one backend -------------------------------------------------------------------------


async def database_size(store: Store, url: str) -> int:
    if store.dialect == "postgresql":
        async with store.read() as conn:
            size = await conn.execute(sa.text("SELECT pg_database_size(current_database())"))
            return int(size.scalar_one())
    path = Path(url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def run_backend(backend: str, url: str, plan: Plan, args: Any) -> None:
    say(f"\n=== {backend}: {plan.messages:,} messages in {len(plan.conversations):,} "
        f"planned conversations, batches of {args.batch} ===")  # fmt: skip
    store = Store.open(url)
    try:
        await store.upgrade()
        plugins = load_plugins({}, extra=[("bench", BenchChannels())], entry_points_enabled=False)
        loaded = args.skip_load
        if not loaded:
            plain = await baseline_insert(store, plan, args)
            say(f"  baseline: bare INSERT of {plain.messages:,} message rows into a plain table: "
                f"{plain.rate:,.0f} messages/s, "
                f"{plain.cpu_per_message:.3f} ms CPU/message")  # fmt: skip
            staff = await make_staff(store)
            clock = ManualClock(START)
            svc = service(store, plugins, clock)
            ing = await ingest_all(svc, clock, plan, args)
            count = await find_conversation_ids(store, plan)
            batch_p50 = percentile(ing.batch_ms, 50)
            batch_p95 = percentile(ing.batch_ms, 95)
            say(f"  ingestion through Conversations.ingest: {ing.messages:,} messages "
                f"({ing.stored:,} stored) into {count:,} conversations in {ing.seconds:,.1f} s"
                f" = {ing.rate:,.0f} messages/s ({ing.rate / plain.rate:.2f}x the bare INSERT), "
                f"{ing.cpu_per_message:.3f} ms CPU/message of this process; "
                f"per batch p50 {batch_p50:.0f} ms, p95 {batch_p95:.0f} ms")  # fmt: skip
            project_ids = await _project_ids(store)
            work = await agents_work(store, plugins, plan, staff, project_ids, args)
            say(f"  agents at work: {work.actions:,} service calls in {work.seconds:,.1f} s "
                f"({work.actions / work.seconds:,.0f}/s); {work.counts}")  # fmt: skip
        else:
            count = await find_conversation_ids(store, plan)
            staff = await _load_staff(store, plugins)
        if store.dialect == "postgresql":
            async with store.engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(sa.text("VACUUM ANALYZE"))
        else:  # what a running worker does in the background (tidings.service.worker)
            started, cpu = time.perf_counter(), time.process_time()
            steps = await compact_until_done(store)
            say(
                f"  search index compacted as a worker would: {steps} merge steps in "
                f"{time.perf_counter() - started:.1f} s ({time.process_time() - cpu:.1f} s CPU)"
            )
        size = await database_size(store, url)
        say(f"  database size: {size / 2**20:,.0f} MiB")
        load = os.getloadavg()
        baseline, results = await latencies(store, plugins, plan, staff, args)
        say(f"  machine load average (1 min) before/after the latency runs: {load[0]:.1f} / "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
        title = (f"{backend}: latency of views and searches (through the service, "
                 f"{args.repeat} runs each, different agents)")  # fmt: skip
        print_latencies(title, results, baseline)
        over = [r.name for r in results if r.p95 >= 50.0]
        say(
            f"  {backend}: {len(results) - len(over)}/{len(results)} under 50 ms p95"
            + (f"; over: {', '.join(over)}" if over else "")
        )
    finally:
        await store.close()


async def _project_ids(store: Store) -> dict[str, int]:
    async with store.read() as conn:
        rows = await conn.execute(sa.text("SELECT key, id FROM projects"))
        return {str(k): int(v) for k, v in rows}


async def _load_staff(store: Store, plugins: Plugins) -> Staff:
    svc = Conversations(store, plugins, {})
    async with store.read() as conn:
        query = sa.text("SELECT id, can_view_all FROM agents ORDER BY id")
        rows = (await conn.execute(query)).all()
    actors = [(await svc.actor(int(r[0])), bool(r[1])) for r in rows]
    return Staff([a for a, boss in actors if not boss], [a for a, boss in actors if boss])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--batch", type=int, default=500, help="messages per ingest call")
    parser.add_argument("--repeat", type=int, default=50, help="timed runs of each query")
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--workers", type=int, default=4,  # PostgreSQL; SQLite writes serially
                        help="agents working the backlog at once")  # fmt: skip
    parser.add_argument(
        "--baseline-messages",
        type=int,
        default=200_000,
        help="rows for the bare INSERT baseline (its rate does not grow with size)",
    )
    parser.add_argument(
        "--sqlite-path",
        type=Path,
        default=None,
        help="keep the SQLite database here (default: a temporary file)",
    )
    parser.add_argument(
        "--postgresql-url", default=None, help="use this database instead of a throwaway server"
    )
    parser.add_argument(
        "--skip-load",
        action="store_true",
        help="measure an already loaded database (same sizes and seed)",
    )
    parser.add_argument(
        "--search-plan",
        choices=("auto", "index", "walk"),
        default="auto",
        help="auto: tidings.store.search.plan decides; index/walk: force one plan for every "
        "search (to compare the plans on the same database)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="measure only queries whose name contains this (repeatable)",
    )
    return parser.parse_args(argv)  # fmt: skip


def force_search_plan(choice: str) -> None:
    """Make ``search.plan`` choose one plan for every query (``auto``: leave it alone)."""
    if choice == "index":  # never common: every match collected first
        search.COMMON_HITS = 2**62
    elif choice == "walk":  # always common: the view walked, each row tested
        search.COMMON_HITS = 0


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    force_search_plan(args.search_plan)
    say(f"tidings conversation benchmark: {args.messages:,} messages, {args.conversations:,} "
        f"conversations, backend {args.backend}, search plan {args.search_plan}, "
        f"pid {os.getpid()}")  # fmt: skip
    plan = make_plan(args.seed, args.conversations, args.messages)
    # The plan is the benchmark's own data (~570,000 objects at a million messages), which
    # no service process holds: out of the collector's reach, as `tidings serve` puts its
    # start-up objects, or each full collection walks it again (0.5 s, one query's pause).
    freeze_startup_objects()
    say(f"  plan made in {time.perf_counter() - started:.1f} s")
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
            path = args.sqlite_path or Path(tmp) / "bench.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            if not args.skip_load:
                for old in path.parent.glob(path.name + "*"):
                    old.unlink()
            await run_backend("sqlite", f"sqlite:///{path}", plan, args)
    if args.backend in ("postgresql", "both"):
        if args.postgresql_url:
            await run_backend("postgresql", args.postgresql_url, plan, args)
        else:
            with Postgres() as pg:
                await run_backend("postgresql", pg.database("bench"), plan, args)
    say(f"\ndone in {time.perf_counter() - started:,.0f} s")


if __name__ == "__main__":
    anyio.run(main, parse_args())
