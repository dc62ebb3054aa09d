"""The scenario schema: immutable, validated specs (pydantic) separate from implementations.

A scenario is validated once, before simulated time passes. Every field has a documented default
so that a minimal scenario needs only ``name``, ``duration`` and ``stack.policy``. Durations are
strings such as ``30s``, ``2h`` or ``1w`` (see :mod:`sim.durations`); a bare number is seconds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from sim.durations import DURATION_PATTERN, format_duration, parse_duration

__all__ = [
    "Duration",
    "Scenario",
    "World",
    "Users",
    "Catalog",
    "Behavior",
    "Stack",
    "PolicySpec",
    "Layers",
    "RetrainLayer",
    "Output",
]

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "description": "a duration: '150ms', '30s', '5m', '2h', '1d', '1w', '1mo', or seconds",
        }
    ),
]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


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
    noise_sd * N(0, 1)``; it is clicked with probability ``sigmoid((u - click_at) /
    click_temperature)``; a click whose dwell is under ``short_dwell`` is a short-dwell negative;
    an examined, unclicked item with ``u < explicit_at`` draws an explicit negative with
    probability ``explicit_prob``, otherwise it is skipped.
    """

    examine_decay: float = Field(0.85, gt=0, le=1, description="examination at position p: d^p")
    affinity_weight: float = Field(1.5, ge=0, le=100)
    quality_weight: float = Field(1.0, ge=0, le=100)
    popularity_weight: float = Field(0.3, ge=0, le=100)
    noise_sd: float = Field(1.0, ge=0, le=100)
    click_at: float = Field(2.5, ge=-100, le=100, description="utility of a 50% click chance")
    click_temperature: float = Field(0.5, gt=0, le=100)
    dwell_median: Duration = Field(45.0, gt=0, description="dwell of a click at utility 0")
    dwell_sd: float = Field(0.8, ge=0, le=10, description="lognormal sd of dwell")
    dwell_utility_slope: float = Field(0.3, ge=0, le=10, description="log-dwell per utility")
    short_dwell: Duration = Field(10.0, ge=0, description="a click shorter than this is negative")
    explicit_at: float = Field(-1.5, ge=-100, le=100, description="utility below which users act")
    explicit_prob: Probability = Field(0.3, description="chance of an explicit negative then")
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


class World(Spec):
    """The ground truth: users, catalogue and behaviour."""

    users: Users = Users()
    catalog: Catalog = Catalog()
    behavior: Behavior = Behavior()


# --- stack -----------------------------------------------------------------------------------


class PolicySpec(Spec):
    """A policy by registry name (``popular``) or import target (``pkg.module:Class``)."""

    name: str = Field(min_length=1, description="a registered policy name, or module:Class")
    params: dict[str, Any] = Field(default_factory=dict, description="the policy's own parameters")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `policy: popular` is the same as `policy: {name: popular}`.
        return {"name": value} if isinstance(value, str) else value


class RetrainLayer(Spec):
    """Periodic retrain: fit the policy on the events visible at trigger time, publish later.

    An event at time t is visible to a trigger at time s when ``t + latency < s``; the new model
    serves all traffic from ``s + compute_time``.
    """

    enabled: bool = True
    every: Duration = Field(86400.0, gt=0, description="trigger period")
    phase: Duration | Literal["random"] = Field(
        "random", description="first trigger time; random: uniform in [0, every)"
    )
    latency: Duration = Field(0.0, description="ingestion delay before an event can be used")
    compute_time: Duration = Field(0.0, description="trigger to new model live")


class Layers(Spec):
    """The update layers (more kinds arrive with the layers issue)."""

    retrain: RetrainLayer | None = None


class Stack(Spec):
    """What is served: a policy, the slate size and the layers that update it."""

    policy: PolicySpec
    slate_size: int = Field(10, ge=1, le=200, description="items per slate")
    layers: Layers = Layers()


class Output(Spec):
    """What a run writes besides the summary."""

    events: bool = Field(True, description="write events.parquet (one row per impression)")


# --- scenario --------------------------------------------------------------------------------


class Scenario(Spec):
    """One scenario file: world, stack, timing and output.

    Simulated time runs from 0 to ``warmup + duration``; metrics cover ``[warmup, end)``.
    """

    name: str = Field(min_length=1, max_length=200, description="names the results directory")
    description: str = Field("", max_length=20_000)
    seed: int = Field(0, ge=0, le=2**63 - 1, description="root seed of every random stream")
    duration: Duration = Field(gt=0, le=10 * 365 * 86400.0, description="measured time")
    warmup: Duration = Field(0.0, le=10 * 365 * 86400.0, description="time before measuring")
    tick: Literal["auto"] | Duration = Field(
        "auto", description="serving window; auto = the fastest feedback path"
    )
    world: World = World()
    stack: Stack
    output: Output = Output()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        k = self.stack.slate_size
        if self.world.catalog.items < k:
            raise ValueError(
                f"world.catalog.items ({self.world.catalog.items}) must be at least "
                f"stack.slate_size ({k})"
            )
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

        Layer triggers and releases end a serving window, so a batch layer's changes are exact at
        any tick; what bounds the tick is a user's own next request, which must see the state
        (abandonment, churn) that the previous one caused.
        """
        return "world.users.session.gap_min", self.world.users.session.gap_min

    @property
    def tick_seconds(self) -> float:
        """The serving window in seconds (``auto`` resolved)."""
        return self.fastest_feedback_path()[1] if self.tick == "auto" else float(self.tick)
