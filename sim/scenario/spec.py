"""The scenario schema: immutable, validated specs (pydantic) separate from implementations.

A scenario is validated once, before simulated time passes. Every field has a documented default
so that a minimal scenario needs only ``name``, ``duration`` and ``stack.policy``. Durations are
strings such as ``30s``, ``2h`` or ``1w`` (see :mod:`sim.scenario.durations`); a bare number is
seconds.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from sim.scenario.durations import (
    DURATION_PATTERN,
    format_duration,
    parse_duration,
    parse_written_duration,
)

__all__ = [
    "Duration",
    "Scenario",
    "World",
    "Users",
    "Catalog",
    "Behavior",
    "UserModelSpec",
    "Stack",
    "Warm",
    "PolicySpec",
    "Layers",
    "Layer",
    "CustomLayer",
    "RetrainLayer",
    "RealtimeFeatures",
    "NearlineEmbeddings",
    "SessionContext",
    "ProfileMemory",
    "Bandit",
    "OnlineLearning",
    "Output",
    "Intervention",
    "TopicAversion",
    "ItemTurnsBad",
    "PreferenceShift",
    "CatalogBurst",
    "TrafficSpike",
    "Variants",
    "Case",
    "Bounds",
    "Precision",
    "AdaptiveReplications",
    "Metrics",
    "Quick",
    "Probe",
    "Logging",
    "LabelDelay",
    "ExponentialDelay",
    "LognormalDelay",
    "EmpiricalDelay",
    "CONTROLS",
    "RESERVED_LABELS",
]


def _duration(value: object, info: ValidationInfo) -> float:
    """Seconds from a duration; a bare number is seconds from Python, refused from a person
    (validation context :data:`WRITTEN`: the loader's)."""
    if (info.context or {}).get("written"):
        return parse_written_duration(value)
    return parse_duration(value)


#: Validation context of what a person wrote: durations need their unit.
WRITTEN = {"written": True}

Duration = Annotated[
    float,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0, "maximum": 0},
            ],
            "description": "a duration: '150ms', '30s', '5m', '2h', '1d', '1w', '1mo' (a bare "
            "number is refused in a scenario, except 0)",
        }
    ),
]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _printable(text: str) -> str:
    """``text`` if it holds no control character: names and labels are echoed to terminals and
    written into reports, where an escape sequence or a NUL would do harm."""
    bad = sorted({repr(c)[1:-1] for c in text if unicodedata.category(c) == "Cc"})
    if bad:
        raise ValueError(f"must not contain control characters (found {', '.join(bad)})")
    return text


#: A name or label: printable text (no terminal escapes, no NUL).
Name = Annotated[str, AfterValidator(_printable)]


#: Longest scenario description accepted (characters).
MAX_DESCRIPTION = 20_000


class Spec(BaseModel):
    """Base of every spec: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- world -----------------------------------------------------------------------------------


class SessionsPerDay(Spec):
    """How often each user starts a session; heterogeneous across users."""

    distribution: Literal["lognormal", "constant"] = Field(
        "lognormal", description="lognormal: heavy-tailed activity; constant: every user alike"
    )
    median: float = Field(2.0, gt=0, le=1000, description="median sessions per user per day")
    sigma: float = Field(0.8, ge=0, le=5, description="lognormal sigma of the per-user rate")


class Diurnal(Spec):
    """A daily cycle of activity: rate x (1 + amplitude * cos(2 pi (hour - peak_hour) / 24))."""

    amplitude: float = Field(0.5, ge=0, lt=1, description="0 = flat, 0.9 = strong day/night")
    peak_hour: float = Field(20.0, ge=0, lt=24, description="hour of day with most sessions")


class Session(Spec):
    """Requests within a session: a geometric count, separated by browse gaps."""

    requests_mean: float = Field(6.0, ge=1, le=1000, description="mean requests per session")
    gap_min: Duration = Field(10.0, gt=0, description="shortest time between two requests")
    gap_mean: Duration = Field(30.0, ge=0, description="mean extra gap beyond gap_min")


class Drift(Spec):
    """Slow random drift of every user's true preferences."""

    sd_per_day: float = Field(0.05, ge=0, le=10, description="random-walk sd per sqrt(day)")
    every: Duration = Field(3600.0, gt=0, description="how often drift is applied")


class Users(Spec):
    """The population: latent preferences as topic mixtures and heterogeneous activity."""

    count: int = Field(10_000, ge=1, le=100_000_000, description="number of users")
    topic_concentration: float = Field(
        0.3, gt=0, le=100, description="Dirichlet alpha of topic mixtures; small = focused users"
    )
    idiosyncrasy: float = Field(
        0.3, ge=0, le=10, description="sd of each user's personal offset from the topic mixture"
    )
    sessions_per_day: SessionsPerDay = SessionsPerDay()
    diurnal: Diurnal = Diurnal()
    session: Session = Session()
    drift: Drift = Drift()
    segments: Name | None = Field(
        None,
        description="a Parquet or CSV file of user segments (columns segment, share, click_scale; "
        "path relative to the scenario file): each user joins a segment with its share of "
        "probability and clicks with click_scale times each item's click_prob (needs "
        "world.catalog.table with click_prob; see docs/worlds.md)",
    )


class Catalog(Spec):
    """Items with latent vectors around topic centroids, creators, quality and popularity."""

    items: int = Field(5_000, ge=1, le=10_000_000, description="items at the start")
    topics: int = Field(20, ge=1, le=10_000, description="number of topics")
    creators: int = Field(500, ge=1, le=10_000_000, description="number of creators")
    dim: int = Field(16, ge=2, le=512, description="dimension of latent vectors")
    topic_spread: float = Field(0.5, ge=0, le=10, description="item scatter around its topic")
    quality_sd: float = Field(0.5, ge=0, le=10, description="sd of item quality")
    zipf_exponent: float = Field(1.0, ge=0, le=5, description="popularity prior ~ 1/rank^s")
    new_items_per_day: float = Field(100.0, ge=0, le=10_000_000, description="arrival rate")
    table: Name | None = Field(
        None,
        description="a Parquet or CSV file of the items (columns item, and optionally "
        "click_prob, topic, creator, quality, created_at, negative_prob; path relative to the "
        "scenario file): its rows are the catalogue, so items and new_items_per_day are not "
        "given with it; with click_prob an examined item is clicked with exactly that chance "
        "(see docs/worlds.md)",
    )

    @model_validator(mode="before")
    @classmethod
    def _table_or_counts(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("table") is not None:
            counts = ("items", "new_items_per_day")
            given = [key for key in counts if data.get(key) is not None]
            if given:
                raise ValueError(
                    f"{' and '.join(given)}: a table's rows are the catalogue (items arriving "
                    "later have a created_at after 0); leave them out with table"
                )
            rest = {key: value for key, value in data.items() if key not in counts}
            return {**rest, "new_items_per_day": 0.0}
        return data

    @model_serializer(mode="wrap")
    def _without_counts_of_a_table(self, handler: Any) -> Any:
        # with a table, the counts are the table's: written out, they would be refused on reload
        data = handler(self)
        if self.table is not None and isinstance(data, dict):
            data.pop("items", None)
            data.pop("new_items_per_day", None)
        return data


class ExplicitKinds(Spec):
    """Relative weights of the explicit negative actions, and so of their scopes."""

    dismiss: float = Field(0.4, ge=0, description="scope: item")
    not_interested: float = Field(0.3, ge=0, description="scope: topic")
    thumbs_down: float = Field(0.2, ge=0, description="scope: item")
    block_creator: float = Field(0.1, ge=0, description="scope: creator")

    @model_validator(mode="after")
    def _some_weight(self) -> ExplicitKinds:
        if self.dismiss + self.not_interested + self.thumbs_down + self.block_creator <= 0:
            raise ValueError("at least one explicit kind needs a positive weight")
        return self


class Behavior(Spec):
    """How a user responds to a slate.

    Examination falls with position (``examine_decay ** position``). An examined item has utility
    ``affinity_weight * affinity + quality_weight * quality + popularity_weight * popularity +
    freshness_weight * 2 ** (-age / freshness_half_life) + noise_sd * N(0, 1)``, where ``age`` is
    the time since the item arrived (the catalogue the run starts with is old: no freshness); it
    is clicked with probability ``sigmoid((u - click_at) / click_temperature)``; a click whose
    dwell is under ``short_dwell`` is a short-dwell negative; an examined, unclicked item with
    ``u < explicit_at`` draws an explicit negative with probability ``explicit_prob``, otherwise
    it is skipped. A click can also disappoint: if what the item delivered (``u`` without the
    popularity term that drew the click) is under ``letdown_at``, the user, having watched,
    gives it a thumbs-down with probability ``letdown_prob`` (0 by default).
    """

    examine_decay: float = Field(0.85, gt=0, le=1, description="examination at position p: d^p")
    affinity_weight: float = Field(1.5, ge=0, le=100)
    quality_weight: float = Field(1.0, ge=0, le=100)
    popularity_weight: float = Field(0.3, ge=0, le=100)
    freshness_weight: float = Field(
        0.0, ge=0, le=100, description="extra utility of a brand-new item (0: age does not matter)"
    )
    freshness_half_life: Duration = Field(
        86400.0, gt=0, description="item age at which the freshness utility has halved"
    )
    noise_sd: float = Field(1.0, ge=0, le=100)
    click_at: float = Field(2.5, ge=-100, le=100, description="utility of a 50% click chance")
    click_temperature: float = Field(0.5, gt=0, le=100)
    dwell_median: Duration = Field(45.0, gt=0, description="dwell of a click at utility 0")
    dwell_sd: float = Field(0.8, ge=0, le=10, description="lognormal sd of dwell")
    dwell_utility_slope: float = Field(0.3, ge=0, le=10, description="log-dwell per utility")
    short_dwell: Duration = Field(10.0, ge=0, description="a click shorter than this is negative")
    explicit_at: float = Field(-1.5, ge=-100, le=100, description="utility below which users act")
    explicit_prob: Probability = Field(0.3, description="chance of an explicit negative then")
    letdown_prob: Probability = Field(
        0.0,
        description="chance that a click whose delivered utility is under letdown_at ends in a "
        "thumbs-down after watching (logged as thumbs_down with its dwell, not as a click; "
        "metrics.regret's expected clicks still count it)",
    )
    letdown_at: float = Field(
        0.0, ge=-100, le=100, description="delivered utility (without popularity) users regret"
    )
    explicit_kinds: ExplicitKinds = ExplicitKinds()
    abandon_base: Probability = Field(0.02, description="chance of leaving after any slate")
    abandon_no_click: Probability = Field(0.15, description="extra chance after a slate, no click")
    abandon_per_explicit: Probability = Field(0.1, description="extra chance per explicit negative")
    churn_after_bad_sessions: int = Field(
        3, ge=1, le=10_000, description="consecutive bad sessions (no click or abandoned) ..."
    )
    churn_prob: Probability = Field(
        0.3, description="... then the chance, per bad session, to quit"
    )


class UserModelSpec(Spec):
    """A user model by registry name (``parametric``, ``table``) or import target
    (``pkg.module:Class``): what draws users, items and arrivals and answers served slates."""

    name: Name = Field(
        "parametric",
        min_length=1,
        description="parametric (the default), table (the default with world.catalog.table), "
        "an installed user model's name (recloop users lists them), or module:Class",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="the user model's own parameters"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `model: table` is the same as `model: {name: table}`.
        return {"name": value} if isinstance(value, str) else value


class World(Spec):
    """The ground truth: users, catalogue and behaviour, and the user model that draws and
    answers with them."""

    users: Users = Users()
    catalog: Catalog = Catalog()
    behavior: Behavior = Behavior()
    model: UserModelSpec = Field(
        UserModelSpec(),
        description="the user model: parametric unless world.catalog.table is given (then "
        "table), or a plug-in (docs/worlds.md)",
    )

    @model_validator(mode="before")
    @classmethod
    def _table_model(cls, data: Any) -> Any:
        """Without a ``model``, a world with an item table is the table world."""
        if not isinstance(data, dict) or "model" in data:
            return data
        catalog = data.get("catalog")
        if isinstance(catalog, dict) and catalog.get("table") is not None:
            return {**data, "model": {"name": "table"}}
        return data

    @model_validator(mode="after")
    def _tables_need_a_reader(self) -> World:
        if self.model.name == "parametric":
            for path, table in (
                ("catalog.table", self.catalog.table),
                ("users.segments", self.users.segments),
            ):
                if table is not None:
                    raise ValueError(
                        f"{path}: the parametric user model draws its world and reads no "
                        "table; use world.model: table (or leave world.model out)"
                    )
        return self


# --- stack -----------------------------------------------------------------------------------


class PolicySpec(Spec):
    """A policy by registry name (``popular``) or import target (``pkg.module:Class``)."""

    name: Name = Field(min_length=1, description="a registered policy name, or module:Class")
    params: dict[str, Any] = Field(default_factory=dict, description="the policy's own parameters")
    timeout: Duration = Field(
        600.0,
        ge=0,
        description="wall time one call of a policy hook (rank, fit, refresh) may take before "
        "its run fails; 0 = no limit",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `policy: popular` is the same as `policy: {name: popular}`.
        return {"name": value} if isinstance(value, str) else value


class Canary(Spec):
    """Serve a new version to a fixed fraction of users for a while, then to everyone."""

    model_config = ConfigDict(populate_by_name=True)
    fraction: float = Field(gt=0, lt=1, description="share of users in the canary cohort")
    duration: Duration = Field(alias="for", gt=0, description="how long before full rollout")


class Rollout(Spec):
    """How a new version reaches traffic: all at once, or through a canary."""

    canary: Canary


class Cost(Spec):
    """Compute units charged for a layer, summed into the results."""

    per_run: float = Field(0.0, ge=0, description="units per update (trigger)")
    per_event: float = Field(0.0, ge=0, description="units per event processed by an update")


class DriftTrigger(Spec):
    """Fire when a River drift detector sees the negative-feedback rate change."""

    detector: Literal["adwin", "page_hinkley"] = "adwin"
    check_every: Duration = Field(300.0, gt=0, description="how often the rate is measured")
    min_gap: Duration = Field(3600.0, ge=0, description="least time between two triggers")


TRIGGERS = ("every", "after_events", "on_drift", "continuous")


#: The shortest periodic trigger: each fire ends a serving window, so shorter ones would serve
#: thousands of empty windows a simulated second (continuous layers update at every window).
MIN_PERIOD = 1.0


class Layer(Spec):
    """What every layer has: one trigger, ingestion latency, compute time, rollout and cost.

    Exactly one trigger: ``every`` (periodic, first at ``phase``), ``after_events`` (once that
    many new events are visible), ``on_drift`` (a drift detector on the negative-feedback rate)
    or ``continuous: true`` (at every serving window). An event at time t is visible to an update
    triggered at s when ``t + latency < s``; the update serves from ``s + compute_time``.
    """

    enabled: bool = True
    every: Duration | None = Field(None, gt=0, description="periodic trigger")
    phase: Duration | Literal["random"] = Field(
        "random", description="first periodic trigger; random: uniform in [0, every)"
    )
    after_events: int | None = Field(None, ge=1, description="trigger after this many events")
    on_drift: DriftTrigger | None = None
    continuous: bool = Field(False, description="update at every serving window")
    latency: Duration = Field(0.0, description="ingestion delay before an event is visible")
    compute_time: Duration = Field(0.0, description="trigger to new state live")
    rollout: Literal["immediate"] | Rollout = "immediate"
    cost: Cost = Cost()
    warm_start: bool = Field(
        True,
        description="with stack.warm.mode: own, batch layers: one extra update that is live when "
        "the warm-up ends, so measuring starts from a trained state whatever the cadence; its "
        "version is recorded like any other (the common mode always starts from one)",
    )

    #: The trigger a layer gets when the scenario names none.
    default_trigger: ClassVar[dict[str, Any]] = {"every": "1d"}
    #: Whether the layer's state can serve two versions at once (a canary).
    snapshots: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _default_trigger(cls, value: Any) -> Any:
        if isinstance(value, dict) and not any(value.get(key) for key in TRIGGERS):
            return {**cls.default_trigger, **value}
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> Layer:
        chosen = [key for key in TRIGGERS if getattr(self, key)]
        if len(chosen) != 1:
            raise ValueError(f"a layer needs exactly one trigger of {TRIGGERS}, got {chosen}")
        if self.continuous and self.compute_time:
            raise ValueError("a continuous layer has no compute_time (it updates every window)")
        if self.every is not None and self.every < MIN_PERIOD:
            raise ValueError(
                f"every {format_duration(self.every)} is shorter than "
                f"{format_duration(MIN_PERIOD)}: each periodic update ends a serving window, so "
                "this would serve one window per update; for updates on every event use "
                "continuous: true"
            )
        if self.rollout != "immediate" and not self.snapshots:
            raise ValueError("this layer's state is updated in place: rollout must be immediate")
        return self

    @property
    def canary(self) -> Canary | None:
        return None if self.rollout == "immediate" else self.rollout.canary


class RetrainLayer(Layer):
    """Layer 3: the policy's ``fit`` on the logged window, then validation, canary, rollout."""

    window: Duration | None = Field(None, gt=0, description="train on events this recent only")
    label_sample: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of users whose negative feedback (short dwells, explicit negatives) "
        "reaches training as labels, as from a survey panel; 1: every user's",
    )


class FeatureWeights(Spec):
    """Configured weights of the real-time features in ranking scores."""

    user_topic_negative: float = Field(-1.0, description="per decayed negative on the topic")
    user_topic_positive: float = Field(0.1, description="per decayed click on the topic")
    item_negative_rate: float = Field(-2.0, description="per unit of the item's negative rate")


class RealtimeFeatures(Layer):
    """Layer 1: a feature store of decayed counts the frozen ranker reads."""

    default_trigger: ClassVar[dict[str, Any]] = {"continuous": True}
    snapshots: ClassVar[bool] = False
    latency: Duration = Field(1.0, description="ingestion delay before an event is visible")
    half_life: Duration = Field(3600.0, gt=0, description="decay of the per-user topic counts")
    item_half_life: Duration = Field(3600.0, gt=0, description="decay of per-item rates")
    weights: FeatureWeights = FeatureWeights()


class EmbeddingWindow(Spec):
    span: Duration = Field(gt=0, description="how far back this window reaches")
    weight: float = Field(ge=0, description="its weight in the user embedding")


class NearlineEmbeddings(Layer):
    """Layer 2: user embeddings recomputed from recent behaviour in several windows."""

    default_trigger: ClassVar[dict[str, Any]] = {"every": "5m"}
    windows: list[EmbeddingWindow] = Field(
        default_factory=lambda: [
            EmbeddingWindow(span=7 * 86400.0, weight=0.5),
            EmbeddingWindow(span=30 * 86400.0, weight=0.3),
            EmbeddingWindow(span=180 * 86400.0, weight=0.2),
        ],
        min_length=1,
    )
    negative_weight: float = Field(1.0, ge=0, description="pull away from disliked items")


class SessionContext(Layer):
    """In-session adaptation without weight updates: what the user rejected in this session is
    demoted for the rest of it (an LLM recommender's prompt context)."""

    default_trigger: ClassVar[dict[str, Any]] = {"continuous": True}
    snapshots: ClassVar[bool] = False
    item_demotion: float = Field(10.0, ge=0, description="score penalty of a rejected item")
    topic_demotion: float = Field(1.0, ge=0, description="penalty per rejection on the topic")
    include_skips: bool = Field(False, description="count skips as rejections")


class ProfileMemory(Layer):
    """A stored cross-session profile of explicit dislikes, applied from the next session on."""

    default_trigger: ClassVar[dict[str, Any]] = {"every": "1d"}
    retention: Duration = Field(90 * 86400.0, gt=0, description="how long a dislike is kept")
    slots: int = Field(16, ge=1, le=1024, description="dislikes of items/creators kept per user")
    item_demotion: float = Field(10.0, ge=0)
    creator_demotion: float = Field(5.0, ge=0)
    topic_demotion: float = Field(2.0, ge=0)


class Bandit(Layer):
    """Layer 0: explore/exploit over topics on top of ranking; the bandit picks the topic of the
    item at ``position`` in every slate, and learns from clicks on that item."""

    default_trigger: ClassVar[dict[str, Any]] = {"every": "1m"}
    snapshots: ClassVar[bool] = False
    learning_policy: Literal["thompson", "ucb1", "epsilon_greedy", "linucb"] = "thompson"
    arms: Literal["topics", "candidates"] = Field(
        "topics",
        description="topics: which topic fills the slot; candidates: which of the "
        "policy's top `candidates` items does",
    )
    candidates: int = Field(5, ge=2, le=1000, description="top-N candidates, with arms: candidates")
    alpha: float = Field(1.0, ge=0, description="UCB1 and LinUCB exploration weight")
    epsilon: float = Field(0.1, ge=0, le=1, description="epsilon-greedy exploration rate")
    position: int = Field(0, ge=0, description="the slate position the bandit fills")
    implementation: Literal["mabwiser", "vectorized"] = Field(
        "mabwiser", description="MABWiser, or the vectorized equivalent for many arms"
    )

    @model_validator(mode="after")
    def _linucb_needs_mabwiser(self) -> Bandit:
        if self.learning_policy == "linucb" and self.implementation != "mabwiser":
            raise ValueError(
                "linucb has no vectorized implementation; use implementation: mabwiser"
            )
        return self


class OnlineLearning(Layer):
    """Per-event weight updates of a River logistic regression on the real-time features: the
    counterfactual no production system runs, with its cost."""

    default_trigger: ClassVar[dict[str, Any]] = {"continuous": True}
    snapshots: ClassVar[bool] = False
    latency: Duration = Field(1.0, description="ingestion delay before an event is visible")
    learning_rate: float = Field(0.05, gt=0, le=10, description="SGD step of each update")
    half_life: Duration = Field(3600.0, gt=0, description="decay of its feature counts")


class CustomLayer(Layer):
    """A layer of your own (a plug-in: see :mod:`sim.serving.layers.base`): ``name`` is its
    ``module:Class`` target or an installed layer's name, ``params`` its own parameters,
    validated by its ``Params`` before simulated time passes; its trigger, latency, compute time,
    rollout and cost are the shared runtime's, written beside them as for any layer."""

    name: Name = Field(
        min_length=1, description="module:Class, or the name of an installed layer (recloop layers)"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="the layer's own parameters, validated by its Params"
    )


#: A layer's name in stack.layers: it names event-log columns, results rows and random streams.
LAYER_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
#: Names of served state that is not a layer's (the probes' snoozes).
RESERVED_LAYER_NAMES = ("snooze",)


class Layers(Spec):
    """The update layers; each is off unless present (or ``enabled: false``). Any other key
    names a layer of your own: ``{name: module:Class, params: {...}}`` beside its trigger."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, CustomLayer] = Field(init=False)
    #: The model of a key of your own (the loader's nearest-key hints look inside it).
    extra_model: ClassVar[type[Spec]] = CustomLayer

    realtime_features: RealtimeFeatures | None = None
    nearline_embeddings: NearlineEmbeddings | None = None
    retrain: RetrainLayer | None = None
    session_context: SessionContext | None = None
    profile_memory: ProfileMemory | None = None
    bandit: Bandit | None = None
    online_learning: OnlineLearning | None = None

    @model_validator(mode="before")
    @classmethod
    def _own_layers(cls, value: Any) -> Any:
        """A key that is no built-in is a layer of your own only with a ``name``; else it is a
        typo, named with the nearest built-in."""
        if not isinstance(value, dict):
            return value
        for key, layer in value.items():
            if key in cls.model_fields:
                continue
            if not (isinstance(layer, dict) and "name" in layer or isinstance(layer, CustomLayer)):
                match = difflib.get_close_matches(str(key), list(cls.model_fields), n=1)
                hint = f"; did you mean '{match[0]}'?" if match else ""
                raise ValueError(
                    f"unknown layer {key!r}{hint} (a layer of your own needs name: "
                    "module:Class; recloop layers lists the installed ones)"
                )
            if not isinstance(key, str) or not LAYER_NAME.fullmatch(key):
                raise ValueError(
                    f"layer name {key!r} must be lowercase letters, digits and _, starting with a "
                    "letter (it names event-log columns and results rows)"
                )
            if key in RESERVED_LAYER_NAMES:
                raise ValueError(f"layer name {key!r} is reserved (the probes' snoozes)")
        return value

    def active(self) -> dict[str, Layer]:
        """The enabled layers by name, in the order they update at one instant: the built-ins,
        then layers of your own as written."""
        found = {name: getattr(self, name) for name in type(self).model_fields}
        found.update(self.model_extra or {})
        return {name: spec for name, spec in found.items() if spec is not None and spec.enabled}


class Warm(Spec):
    """How the stack reaches the start of measurement (the end of ``warmup``).

    ``common`` (the default) brings every variant to the same state, as a production stack is
    warm when a cadence changes: during warm-up the policy serves as a *logging policy* (its own
    exploration, no layer adjustments), its model refit every ``refit_every`` on everything logged
    so far, identically in every variant of a sweep; at the end of warm-up every layer starts from
    the whole warm-up log (a batch layer fits on it and goes live at once, an incremental one
    absorbs it) and only then do the variants' own cadences, latencies and rollouts begin.
    Variants that share the policy therefore share the warm-up bit for bit, and their differences
    are the cadences'. ``own`` runs each variant's layers on their own cadences from time 0 (with
    each batch layer's ``warm_start``): the warm-up itself then differs between variants.
    """

    mode: Literal["common", "own"] = Field(
        "common",
        description="common: every variant starts measuring from the same warm state; own: each "
        "variant's layers run from time 0",
    )
    refit_every: Duration = Field(
        3600.0,
        gt=0,
        description="common mode: how often the logging policy's model is refit on the warm-up "
        "log (policies with a fit hook)",
    )


class Stack(Spec):
    """What is served: a policy, the slate size and the layers that update it."""

    policy: PolicySpec
    slate_size: int = Field(10, ge=1, le=200, description="items per slate")
    layers: Layers = Layers()
    warm: Warm = Warm()
    frozen_after_warmup: bool = Field(
        False, description="no layer updates after warm-up (the 'frozen' reference bound)"
    )


# --- interventions ---------------------------------------------------------------------------


def relative_offset(at: str, duration: float) -> float | None:
    """Seconds after the end of warm-up of a time written ``+12h`` or ``+25%`` (a share of the
    measured ``duration``); ``None`` when ``at`` is neither.

    >>> relative_offset("+12h", 172800.0), relative_offset("+25%", 172800.0)
    (43200.0, 43200.0)
    """
    text = at.strip().removeprefix("+").strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            return None
        return share / 100 * duration if 0 <= share < 100 else None
    try:
        return parse_duration(text)
    except ValueError:
        return None


#: An event time: a duration from the run's start, or from the end of warm-up written ``+12h``
#: or ``+25%`` of the measured duration (what :meth:`Scenario._relative_times` resolves), so that
#: shrinking ``warmup`` or ``duration`` keeps it valid.
def _at(value: object, info: ValidationInfo) -> float:
    if isinstance(value, str) and value.strip().startswith("+"):  # valid ones are resolved
        raise ValueError(
            f"expected a time after warm-up such as '+12h', or '+25%' of the measured duration "
            f"(from 0% to below 100%), got {value!r}"
        )
    return _duration(value, info)


At = Annotated[
    float,
    BeforeValidator(_at),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN.replace("^", "^\\s*\\+?", 1)},
                {"type": "string", "pattern": r"^\s*\+\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*%\s*$"},
                {"type": "number", "minimum": 0, "maximum": 0},
            ],
            "description": "when: a duration from the run's start ('36h'), or from the end of "
            "warm-up ('+12h', or '+25%' of the measured duration)",
        }
    ),
]


class InterventionBase(Spec):
    at: At = Field(
        description="when it happens: from the run's start ('36h'), or from the end of warm-up "
        "('+12h'; '+25%': a quarter into the measured duration, which stays valid when warmup or "
        "duration change)"
    )
    label: Name | None = Field(
        None, max_length=200, description="names it in results; default kind@time"
    )

    @property
    def name(self) -> str:
        return self.label or f"{self.kind}@{format_duration(self.at)}"  # type: ignore[attr-defined]


class TopicAversion(InterventionBase):
    """A share of users turn strongly against a topic: their true utility for its items drops
    by ``strength``, so they dismiss, skip or leave when shown it."""

    kind: Literal["topic_aversion"]
    topic: Annotated[int, Field(ge=0)] | Literal["most_shown"] = Field(
        description="topic index, or most_shown: the topic shown most in the hour before"
    )
    users: float = Field(0.2, gt=0, le=1, description="share of all users affected")
    among: Literal["fans", "all"] = Field(
        "fans", description="fans: the users with the highest true affinity to the topic"
    )
    strength: float = Field(4.0, gt=0, le=100, description="utility drop on the topic's items")


class ItemTurnsBad(InterventionBase):
    """A set of items loses quality for everyone (clickbait, broken, policy-violating); exactly one
    of ``items`` (a share of live items), ``topic`` or ``creator`` chooses the set."""

    kind: Literal["item_turns_bad"]
    items: float | None = Field(None, gt=0, le=1, description="share of live items")
    topic: int | None = Field(None, ge=0, description="every live item of this topic")
    creator: int | None = Field(None, ge=0, description="every live item of this creator")
    most_shown: int | None = Field(
        None, ge=1, description="the items shown most in the hour before (a viral item turns bad)"
    )
    quality_drop: float = Field(4.0, gt=0, le=100, description="drop of true item quality")

    @model_validator(mode="after")
    def _one_selector(self) -> ItemTurnsBad:
        keys = ("items", "topic", "creator", "most_shown")
        chosen = [key for key in keys if getattr(self, key) is not None]
        if len(chosen) != 1:
            raise ValueError(f"choose the items by exactly one of {', '.join(keys)}; got {chosen}")
        return self


class PreferenceShift(InterventionBase):
    """A share of users move their interests towards another topic."""

    kind: Literal["preference_shift"]
    to_topic: int = Field(ge=0, description="topic the users move to")
    users: float = Field(0.2, gt=0, le=1, description="share of all users affected (random)")
    amount: float = Field(0.8, gt=0, le=1, description="0 = no move, 1 = entirely to the topic")


class CatalogBurst(InterventionBase):
    """Many new items arrive at once (cold start)."""

    kind: Literal["catalog_burst"]
    items: int = Field(ge=1, le=10_000_000, description="items arriving")
    topic: int | None = Field(None, ge=0, description="all of one topic, or drawn as usual")


class TrafficSpike(InterventionBase):
    """Session arrivals multiplied for a while."""

    model_config = ConfigDict(populate_by_name=True)
    kind: Literal["traffic_spike"]
    multiplier: float = Field(gt=1, le=100, description="arrival rate multiplier")
    duration: Duration = Field(alias="for", gt=0, description="how long the spike lasts")


Intervention = Annotated[
    TopicAversion | ItemTurnsBad | PreferenceShift | CatalogBurst | TrafficSpike,
    Field(discriminator="kind"),
]


# --- probes ----------------------------------------------------------------------------------

#: The user controls a probe can take: the explicit negatives the behaviour model has, the
#: deletion of past events, and a snooze.
CONTROLS = (
    "dismiss",
    "not_interested",
    "thumbs_down",
    "block_creator",
    "remove_from_history",
    "snooze",
)


class Probe(Spec):
    """A sample of users take one control at one time, each on their own target: the causal
    effect of the control is measured against a twin run in which they do not (same seed, same
    everything else; see :mod:`sim.serving.probes`)."""

    model_config = ConfigDict(populate_by_name=True)
    control: Literal[
        "dismiss",
        "not_interested",
        "thumbs_down",
        "block_creator",
        "remove_from_history",
        "snooze",
    ] = Field(
        description="the control taken: dismiss and thumbs_down are about the item, "
        "not_interested its topic, block_creator its creator; remove_from_history deletes the "
        "user's past events on the target (the item, or with target most_shown_topic or "
        "most_shown_creator every item of that topic or creator), which no layer may use in a "
        "later update; snooze hides the target's topic or creator (target most_shown_topic or "
        "most_shown_creator) from the user for the time given in for, then lets it back"
    )
    duration: Duration | None = Field(
        None, alias="for", gt=0, description="snooze only: how long the topic or creator is hidden"
    )
    at: At = Field(
        description="when: from the run's start ('36h'), or from the end of warm-up ('+12h', "
        "'+25%' of the measured duration)"
    )
    users: float = Field(
        gt=0,
        description="how many users take it: a count (500), or a share of all users (0.05); "
        "drawn among those shown something in the hour before and not drawn by an earlier "
        "probe (fewer when fewer are eligible)",
    )
    target: Literal["most_shown_item", "most_shown_topic", "most_shown_creator"] = Field(
        "most_shown_item",
        description="each user's target: the item they were shown most in the hour before, or "
        "the item they were shown most of the topic (creator) they were shown most",
    )
    label: Name | None = Field(
        None, max_length=200, description="names it in results; default control@time"
    )

    @model_validator(mode="after")
    def _count_or_share(self) -> Probe:
        if self.control == "snooze":
            if self.duration is None:
                raise ValueError("a snooze needs its duration: for: 30d, say")
            if self.target == "most_shown_item":
                raise ValueError(
                    "a snooze hides a topic or a creator: target most_shown_topic or "
                    "most_shown_creator"
                )
        elif self.duration is not None:
            raise ValueError(f"for: only a snooze has a duration, not {self.control}")
        if self.users >= 1 and self.users != int(self.users):
            raise ValueError(
                f"users: {self.users} is neither a count (a whole number) nor a share (below 1)"
            )
        return self

    @property
    def name(self) -> str:
        return self.label or f"{self.control}@{format_duration(self.at)}"

    def count(self, n_users: int) -> int:
        """How many users take the control in a population of ``n_users``."""
        if self.users >= 1:
            return min(int(self.users), n_users)
        return max(1, round(self.users * n_users))


# --- sweeps and metrics ----------------------------------------------------------------------

#: Labels of the reference variants a sweep can add (see :class:`Bounds`).
RESERVED_LABELS = ("frozen", "instant")


class Case(Spec):
    """One hand-written variant: a label and the overrides that make it."""

    model_config = ConfigDict(populate_by_name=True)
    label: Name = Field(min_length=1, max_length=200)
    overrides: dict[str, Any] = Field(
        alias="set", description="dotted.path: value, applied like --set"
    )


class Variants(Spec):
    """What a sweep varies: a ``grid`` (every combination) or a list of ``cases``.

    A grid axis is ``dotted.path: [values]`` (labelled ``every=1h``) or ``dotted.path:
    {label: value}``; a variant's label joins its axes' labels with `` · ``.
    """

    grid: dict[str, list[Any] | dict[str, Any]] = Field(default_factory=dict)
    cases: list[Case] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_form(self) -> Variants:
        if bool(self.grid) == bool(self.cases):
            raise ValueError("give variants as exactly one of grid or cases")
        for path, values in self.grid.items():
            if not values:
                raise ValueError(f"grid axis {path} has no values")
        return self


class Bounds(Spec):
    """Reference variants added to a sweep: ``frozen`` stops every layer after warm-up;
    ``instant`` runs every layer of any variant with no latency, no compute time, immediate
    rollout, incremental layers at every window and batch layers every ``instant_every``."""

    frozen: bool = False
    instant: bool = False
    instant_every: Literal["tick"] | Duration = Field(
        "tick", description="batch layers' period in the instant bound; tick = truly instant"
    )


class Precision(Spec):
    """The precision an adaptive sweep runs until: every variant's 95% interval on ``metric``
    at most ``relative_half_width`` × its mean on either side."""

    metric: str = Field(
        min_length=1,
        description="a runs.parquet metric of every variant, e.g. bad_impressions or ctr",
    )
    relative_half_width: float = Field(
        gt=0,
        description="target half-width of each variant's 95% interval over replications, as a "
        "share of the variant's mean (0.15: mean ± 15%)",
    )


class AdaptiveReplications(Spec):
    """Replications added until a precision is reached: at least ``min``, at most ``max``.

    A replication runs every variant (bounds included) with the same seed, so comparisons stay
    paired. Runs are added in batches as workers allow; the count run is the smallest at which
    every variant (bounds aside) meets ``until``, whatever the batching, so ``--workers`` and
    ``--resume`` give the same results.
    """

    min: int = Field(
        3,
        ge=1,
        le=10_000,
        description="replications run before precision is checked (intervals from fewer than 3 "
        "are unreliable)",
    )
    max: int = Field(ge=1, le=10_000, description="replications run at most")
    until: Precision

    @field_validator("max")
    @classmethod
    def _ordered(cls, value: int, info: ValidationInfo) -> int:
        least = info.data.get("min")
        if least is not None and value < least:
            raise ValueError(f"must be at least min ({least})")
        return value


def _replications_form(value: Any) -> str:
    return "adaptive[]" if isinstance(value, (dict, AdaptiveReplications)) else "int"


#: ``replications``: a count, or the adaptive form; a mapping is read as the adaptive form only,
#: so that an error names its fields, not both forms.
Replications = Annotated[
    Annotated[Annotated[int, Field(ge=1, le=10_000)], Tag("int")]
    | Annotated[AdaptiveReplications, Tag("adaptive[]")],
    Discriminator(_replications_form),
]


NegativeKindName = Literal[
    "skip", "short_dwell", "dismiss", "not_interested", "thumbs_down", "block_creator", "abandon"
]


#: Metrics a report can lead with (``metrics.headline``); the report knows each one's direction.
HeadlineMetric = Literal[
    "bad_impressions",
    "repeat_offences_per_negative",
    "ctr",
    "regret_per_request",
    "sessions_lost",
    "churned_users",
]


class Metrics(Spec):
    """How the propagation, exposure and suppression metrics are measured."""

    exposure_horizon: Duration = Field(
        86400.0, gt=0, description="residual exposure is counted this long after a negative"
    )
    suppression_bin: Duration = Field(
        1800.0, gt=0, description="bad-impression rates are measured in bins this long"
    )
    level_window: Duration = Field(
        3600.0, gt=0, description="the pre-intervention level is measured over this window"
    )
    timeseries_bin: Duration = Field(3600.0, gt=0, description="bins of timeseries.parquet")
    fresh_age: Duration = Field(
        86400.0,
        gt=0,
        description="an item younger than this is fresh: fresh_impression_share is the share "
        "of impressions on fresh items (the starting catalogue is old)",
    )
    regret: bool = Field(
        False,
        description="measure each request's expected clicks against an oracle's (the world's "
        "noise-free utilities of every live item: costs about one more full scoring per request)",
    )
    headline: HeadlineMetric | None = Field(
        None,
        description="the metric the report's first sentence and first column compare variants "
        "on; default: bad impressions with interventions, else repeat offences per explicit "
        "negative (the harm). Set it when the question is another: ctr or regret_per_request "
        "for a learning strategy, churned_users, sessions_lost",
    )
    propagation_kinds: list[NegativeKindName] = Field(
        default_factory=lambda: [  # type: ignore[arg-type]
            "short_dwell",
            "dismiss",
            "not_interested",
            "thumbs_down",
            "block_creator",
        ],
        min_length=1,
        description="negative kinds whose absorption is measured (skips are many, and a session "
        "abandon has no item, so no layer but a retrain reflects it: add either on demand)",
    )


class Quick(Spec):
    """A small configuration of the same scenario, run by ``recloop run NAME --quick``: the
    overrides that make it finish in under a minute on a laptop, applied before the command
    line's ``--set``. Outputs are labelled ``NAME-quick``. Every packaged scenario has one."""

    set: dict[str, Any] = Field(
        min_length=1,
        description="dotted.path: value overrides, as --set would apply them (e.g. "
        "world.users.count: 2000)",
    )


class Output(Spec):
    """What a run writes besides the summary."""

    events: bool = Field(True, description="write events.parquet (one row per impression)")
    event_log: Literal["auto", "memory", "disk"] = Field(
        "auto",
        description="where the run keeps its event log: memory, or temporary files in the run's "
        "folder mapped into memory (bounded memory on long runs); auto = disk when the log is "
        "expected to exceed 1 GiB",
    )


# --- logging (label delays and losses) ---------------------------------------------------------

#: Every event kind, by the name the event log and the results use.
EventKindName = Literal[
    "impression",
    "click",
    "skip",
    "short_dwell",
    "dismiss",
    "not_interested",
    "thumbs_down",
    "block_creator",
    "abandon",
]


class ExponentialDelay(Spec):
    """A label delay drawn from an exponential distribution (memoryless: a constant rate of
    arrival, as a queue drained at random)."""

    distribution: Literal["exponential"] = Field(
        description="exponential: a delay with a constant rate of arrival"
    )
    mean: Duration = Field(gt=0, description="mean label delay (1 / rate)")


class LognormalDelay(Spec):
    """A label delay drawn from a lognormal distribution: a long right tail, as conversions and
    survey answers have (Chapelle 2014)."""

    distribution: Literal["lognormal"] = Field(description="lognormal: a long right tail")
    median: Duration = Field(gt=0, description="median label delay (exp of the log-mean)")
    sigma: float = Field(
        gt=0, le=10, description="standard deviation of the delay's natural logarithm"
    )


class EmpiricalDelay(Spec):
    """A label delay drawn from an empirical distribution given by its quantiles: the delay is
    linear in the probability between two given quantiles (and between 0 at probability 0 and
    the first one)."""

    distribution: Literal["empirical"] = Field(
        description="empirical: a distribution given by its quantiles"
    )
    quantiles: dict[float, Duration] = Field(
        min_length=1,
        description="probability: delay pairs, e.g. {0.35: 1h, 0.5: 1d, 1.0: 30d} (35% of labels "
        "within an hour, half within a day, all within 30 days); probabilities in (0, 1], the "
        "largest exactly 1, delays not decreasing with the probability",
    )

    @field_validator("quantiles")
    @classmethod
    def _monotone(cls, value: dict[float, float]) -> dict[float, float]:
        points = sorted(value.items())
        bad = [p for p, _ in points if not 0 < p <= 1]
        if bad:
            raise ValueError(f"probabilities must be in (0, 1], got {bad[0]}")
        if points[-1][0] != 1:
            raise ValueError(
                f"the largest probability must be 1 (the delay by which every label has arrived), "
                f"got {points[-1][0]}; a share that never arrives is logging.loss"
            )
        delays = [d for _, d in points]
        if any(later < earlier for earlier, later in zip(delays, delays[1:], strict=False)):
            raise ValueError("delays must not decrease as the probability grows")
        return dict(points)


def _delay_form(value: Any) -> str:
    """The tag of a label delay's form (bracketed: the loader leaves it out of error paths)."""
    if isinstance(value, dict):
        return f"{value.get('distribution')}[]"
    if isinstance(value, (ExponentialDelay, LognormalDelay, EmpiricalDelay)):
        return f"{value.distribution}[]"
    return "session_end[]" if value == "session_end" else "constant[]"


#: One event kind's label delay: a constant duration, ``session_end`` (known when the session
#: ends) or a distribution. A mapping is read as a distribution only, so that an error names its
#: fields.
LabelDelay = Annotated[
    Annotated[Duration, Tag("constant[]")]
    | Annotated[Literal["session_end"], Tag("session_end[]")]
    | Annotated[ExponentialDelay, Tag("exponential[]")]
    | Annotated[LognormalDelay, Tag("lognormal[]")]
    | Annotated[EmpiricalDelay, Tag("empirical[]")],
    Discriminator(
        _delay_form,
        custom_error_type="label_delay",
        custom_error_message="expected a duration such as '2s', 'session_end', or "
        "{distribution: exponential|lognormal|empirical, ...}",
    ),
]


class Logging(Spec):
    """How events reach the logs the layers read: per event kind, a label delay between the
    event and its arrival, and a share that never arrives. An event is visible to a layer at
    ``time + label delay + the layer's latency``; a lost event is visible to none. Kinds not
    listed arrive at once and are never lost. Delays and losses are drawn from their own random
    stream (``label_delays``), so a scenario without this section draws exactly as before."""

    delay: dict[EventKindName, LabelDelay] = Field(
        default_factory=dict,
        description="per event kind: a constant delay ('2s'), 'session_end' (the label is known "
        "when the user's session ends, by abandon or its last request; never, if it has not "
        "ended by the end of the run) or {distribution: exponential, mean: 1h}, {distribution: "
        "lognormal, median: 18h, sigma: 1.0} or {distribution: empirical, quantiles: {0.35: 1h, "
        "0.5: 1d, 1.0: 30d}}",
    )
    loss: dict[EventKindName, Probability] = Field(
        default_factory=dict,
        description="per event kind: the probability that an event of that kind is never logged "
        "(e.g. {not_interested: 0.05}); a lost event is seen by no layer and absorbed by none",
    )

    @property
    def active(self) -> bool:
        """Whether any event kind is delayed or lost (else the log is as without the section)."""
        return bool(self.delay) or any(p > 0 for p in self.loss.values())


# --- scenario --------------------------------------------------------------------------------


class Scenario(Spec):
    """One scenario file: world, stack, timing and output.

    Simulated time runs from 0 to ``warmup + duration``; metrics cover ``[warmup, end)``.
    """

    name: Name = Field(min_length=1, max_length=200, description="names the results directory")
    description: str = Field("", max_length=MAX_DESCRIPTION)
    seed: int = Field(0, ge=0, le=2**63 - 1, description="root seed of every random stream")
    duration: Duration = Field(gt=0, le=10 * 365 * 86400.0, description="measured time")
    warmup: Duration = Field(0.0, le=10 * 365 * 86400.0, description="time before measuring")
    tick: Literal["auto"] | Duration = Field(
        "auto", description="serving window; auto = the fastest feedback path"
    )
    world: World = World()
    stack: Stack
    interventions: list[Intervention] = Field(default_factory=list)
    probes: list[Probe] = Field(
        default_factory=list, description="users taking a control, each run paired with its twin"
    )
    probes_withheld: bool = Field(
        False,
        description="the twin run: probe users are chosen with their targets as usual but do not "
        "take the control (a sweep adds these runs itself)",
    )
    variants: Variants | None = None
    baseline: str | None = Field(None, description="label of the variant others are compared with")
    replications: Replications = Field(
        1,
        description="root seeds per variant: a number, or {min, max, until: {metric, "
        "relative_half_width}} to add paired replications until every variant's 95% interval "
        "on the metric is that narrow relative to its mean (or max is reached)",
    )
    bounds: Bounds = Bounds()
    metrics: Metrics = Metrics()
    output: Output = Output()
    quick: Quick | None = Field(None, description="the small configuration --quick runs")
    logging: Logging | None = Field(
        None,
        description="label delays and losses per event kind (without it every event reaches the "
        "logs at once)",
    )

    @model_validator(mode="before")
    @classmethod
    def _relative_times(cls, data: Any) -> Any:
        """``at: +12h`` is twelve hours after the end of warm-up: resolved here, where warmup is
        known (an unreadable warmup leaves it to warmup's own error)."""
        if not isinstance(data, dict):
            return data
        sections = [key for key in ("interventions", "probes") if isinstance(data.get(key), list)]
        if not sections:
            return data
        try:
            warmup = parse_duration(data.get("warmup", 0.0))
            duration = parse_duration(data.get("duration"))
        except ValueError:
            return data
        resolved = {}
        for key in sections:
            events = []
            for event in data[key]:
                at = event.get("at") if isinstance(event, dict) else None
                if isinstance(at, str) and at.strip().startswith("+"):
                    offset = relative_offset(at, duration)
                    if offset is not None:  # else the field's own check names the value
                        event = {**event, "at": format_duration(warmup + offset)}
                events.append(event)
            resolved[key] = events
        return {**data, **resolved}

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        k = self.stack.slate_size
        bandit = self.stack.layers.bandit
        if bandit is not None and bandit.position >= k:
            raise ValueError(
                f"stack.layers.bandit.position ({bandit.position}) must be below stack.slate_size "
                f"({k})"
            )
        if self.world.catalog.table is None and self.world.catalog.items < k:
            raise ValueError(
                f"world.catalog.items ({self.world.catalog.items}) must be at least "
                f"stack.slate_size ({k})"
            )
        catalog = self.world.catalog
        problems = []  # every intervention's problems in one pass
        for index, event in enumerate(self.interventions):
            where = f"interventions.{index}"
            for key in ("topic", "to_topic"):
                topic = getattr(event, key, None)
                if isinstance(topic, int) and topic >= catalog.topics:
                    problems.append(
                        f"{where}.{key}: topic {topic} does not exist (world.catalog.topics is "
                        f"{catalog.topics}; topics are 0 to {catalog.topics - 1})"
                    )
            creator = getattr(event, "creator", None)
            if creator is not None and creator >= catalog.creators:
                problems.append(
                    f"{where}.creator: creator {creator} does not exist (world.catalog.creators "
                    f"is {catalog.creators})"
                )
            if event.at >= self.end:
                problems.append(
                    f"{where}.at: {format_duration(event.at)} from the start is not before the "
                    f"end of the run ({format_duration(self.end)} = warmup "
                    f"{format_duration(self.warmup)} + duration {format_duration(self.duration)})"
                )
        for index, probe in enumerate(self.probes):
            if not self.warmup <= probe.at < self.end:
                problems.append(
                    f"probes.{index}.at: {format_duration(probe.at)} from the start is not in the "
                    f"measured period [{format_duration(self.warmup)}, {format_duration(self.end)})"
                )
        if problems:
            raise ValueError("\n".join(problems))
        probes = [probe.name for probe in self.probes]
        if len(set(probes)) != len(probes):
            raise ValueError(f"probes need distinct labels, got {probes}")
        names = [event.name for event in self.interventions]
        if len(set(names)) != len(names):
            raise ValueError(f"interventions need distinct labels, got {names}")
        if self.tick != "auto":
            if self.tick <= 0:
                raise ValueError(f"tick must be positive, got {format_duration(self.tick)}")
            path, limit = self.fastest_feedback_path()
            if self.tick > limit:
                raise ValueError(
                    f"tick {format_duration(self.tick)} is longer than the fastest feedback path "
                    f"({path} = {format_duration(limit)}): feedback could reach a request in the "
                    f"window that caused it; use tick: auto or at most {format_duration(limit)}"
                )
        return self

    @property
    def end(self) -> float:
        """Simulated time at which the run stops."""
        return self.warmup + self.duration

    def fastest_feedback_path(self) -> tuple[str, float]:
        """The shortest delay through which an event can change what a later request is served.

        Periodic triggers and releases end a serving window, so their changes are exact at any
        tick; what bounds the tick is a user's own next request, which must see the state
        (abandonment, churn, session context) that the previous one caused. Continuous,
        event-count and drift-triggered layers act at window starts; the timing error that adds
        (at most one tick) is recorded with the results.
        """
        return "world.users.session.gap_min", self.world.users.session.gap_min

    @property
    def tick_seconds(self) -> float:
        """The serving window in seconds (``auto`` resolved)."""
        return self.fastest_feedback_path()[1] if self.tick == "auto" else float(self.tick)
