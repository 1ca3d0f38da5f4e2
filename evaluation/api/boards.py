"""The boards API of the evaluation sub-platform: leaderboards with their submission
queue and standings, the run-versus-run comparison, and the arena (battles, votes,
ratings). Routes under ``/api/evaluation/``; the work is in
:mod:`evaluation.services.leaderboards` and :mod:`evaluation.services.arena`.

Tenancy is :class:`~portal.api.base.OwnedViewSet`'s: a private leaderboard or arena is
a 404 to whoever may not read it; a battle is only ever its own user's.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Model, QuerySet
from django.urls import URLPattern, path, re_path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from evaluation.models import Arena, Battle, EvalSuite, Leaderboard, Submission, Winner
from evaluation.services import arena as arenas
from evaluation.services import leaderboards as boards
from evaluation.services.catalog import owner_named
from portal.api.base import OwnedViewSet
from portal.api.v1 import KeyScope
from portal.auth import acting_user
from portal.errors import NotFound
from portal.models import Visibility
from portal.models.accounts import NAMESPACE_RE

MAX_BIG = 2**62
NAMED = [
    OpenApiParameter("namespace", str, OpenApiParameter.PATH, description="Owner's namespace"),
    OpenApiParameter("name", str, OpenApiParameter.PATH, description="The board's name"),
]
BATTLE = [OpenApiParameter("id", str, OpenApiParameter.PATH, description="battle-…")]


# A plain serializer (input or output), never saved; no docstring, so that none is
# inherited into the OpenAPI descriptions of its subclasses.
class Serializer(serializers.Serializer):  # type: ignore[type-arg]
    pass


class OwnedCreateSerializer(Serializer):
    owner = serializers.RegexField(
        NAMESPACE_RE, required=False, help_text="Your username (default) or an organisation"
    )
    name = serializers.RegexField(NAMESPACE_RE)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    description = serializers.CharField(
        max_length=5000, required=False, allow_blank=True, default=""
    )
    visibility = serializers.ChoiceField(Visibility.choices, default=Visibility.PUBLIC)


# Leaderboards ---------------------------------------------------------------------------


class LeaderboardCreateSerializer(OwnedCreateSerializer):
    suite = serializers.CharField(max_length=200, help_text="The suite ranked: namespace/name")


class LeaderboardSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    id = serializers.SerializerMethodField(help_text="namespace/name")
    suite = serializers.SerializerMethodField(help_text="namespace/name of the suite")
    submissions = serializers.SerializerMethodField(help_text="Submissions entered so far")

    class Meta:
        model = Leaderboard
        fields = ["id", "namespace", "name", "title", "description", "visibility", "suite"]
        fields += ["submissions", "created_at"]
        read_only_fields = fields

    def get_id(self, board: Leaderboard) -> str:
        return str(board)

    def get_suite(self, board: Leaderboard) -> str:
        return str(board.suite)

    def get_submissions(self, board: Leaderboard) -> int:
        return int(getattr(board, "submission_count", 0))


class TaskScoreSerializer(Serializer):
    metric = serializers.CharField(help_text="The task's primary metric")
    value = serializers.FloatField(allow_null=True)
    stderr = serializers.FloatField(allow_null=True)


class StandingSerializer(Serializer):
    rank = serializers.IntegerField()
    model = serializers.CharField()
    model_version = serializers.IntegerField(allow_null=True)
    score = serializers.FloatField(allow_null=True, help_text="The suite's aggregate score")
    stderr = serializers.FloatField(allow_null=True)
    tasks = serializers.DictField(child=TaskScoreSerializer())
    run = serializers.CharField()
    submission = serializers.IntegerField()
    params_size = serializers.IntegerField(allow_null=True, help_text="Number of weights")
    license = serializers.CharField(allow_blank=True)
    base_model = serializers.CharField(allow_blank=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class LeaderboardDetailSerializer(LeaderboardSerializer):
    standings = serializers.SerializerMethodField()

    class Meta(LeaderboardSerializer.Meta):
        fields = [*LeaderboardSerializer.Meta.fields, "standings"]
        read_only_fields = fields

    @extend_schema_field(StandingSerializer(many=True))
    def get_standings(self, board: Leaderboard) -> list[dict[str, Any]]:
        rows = boards.standings(board, self.context.get("filters"))
        return list(StandingSerializer(rows, many=True).data)


class StandingsQuerySerializer(Serializer):
    min_params = serializers.IntegerField(required=False, min_value=0, max_value=MAX_BIG)
    max_params = serializers.IntegerField(required=False, min_value=0, max_value=MAX_BIG)
    license = serializers.CharField(required=False, max_length=64, allow_blank=True)
    base_model = serializers.CharField(
        required=False,
        max_length=300,
        allow_blank=True,
        help_text="A base model: it and the models fine-tuned from it",
    )


class SubmissionCreateSerializer(Serializer):
    model = serializers.CharField(max_length=300, help_text="owner/name, owner/name@N or ft:…")


class SubmissionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    leaderboard = serializers.CharField(source="leaderboard.__str__", read_only=True)
    model = serializers.CharField(source="model_name", read_only=True)
    model_version = serializers.IntegerField(
        source="model_version.number", read_only=True, allow_null=True, default=None
    )
    run = serializers.CharField(source="run_id", read_only=True, allow_null=True)
    run_status = serializers.CharField(
        source="run.status", read_only=True, allow_null=True, default=None
    )
    progress = serializers.FloatField(
        source="run.progress", read_only=True, allow_null=True, default=None
    )
    submitted_by = serializers.CharField(
        source="submitted_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Submission
        fields = ["id", "leaderboard", "model", "model_version", "status", "error", "run"]
        fields += ["run_status", "progress", "submitted_by", "created_at", "finished_at"]
        read_only_fields = fields


class BoardViewSet(OwnedViewSet):
    """Leaderboards and arenas: ``{namespace}/{name}`` in the URL, tenancy applied."""

    permission_classes = [permissions.IsAuthenticatedOrReadOnly, KeyScope]
    scope = "evaluation"
    write_actions = frozenset({"destroy"})

    def get_named(self) -> Any:
        """The board of the URL; NotFound (404) unless the user may read it (write it,
        for a write)."""
        namespace, name = self.kwargs["namespace"], self.kwargs["name"]
        board = None
        if "\x00" not in namespace + name:  # PostgreSQL's text cannot hold NUL
            board = self.get_queryset().filter(namespace=namespace, name=name).first()
        if board is None:
            raise NotFound("No such leaderboard or arena.", param="name")
        return board

    def owner(self, request: Request, given: dict[str, Any]) -> Any:
        return owner_named(acting_user(request), given.pop("owner", None))

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def destroy(self, request: Request, namespace: str, name: str) -> Response:
        named: Model = self.get_named()
        named.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(responses=LeaderboardSerializer(many=True)),
    create=extend_schema(
        request=LeaderboardCreateSerializer, responses={201: LeaderboardDetailSerializer}
    ),
    retrieve=extend_schema(
        parameters=[*NAMED, StandingsQuerySerializer], responses=LeaderboardDetailSerializer
    ),
    destroy=extend_schema(parameters=NAMED, responses={204: None}),
)
class LeaderboardViewSet(BoardViewSet):
    """Leaderboards you may see: a suite's ranking of models, fed by submissions."""

    queryset = Leaderboard.objects.select_related("suite").annotate(
        submission_count=Count("submissions")
    )
    serializer_class = LeaderboardSerializer

    def create(self, request: Request) -> Response:
        data = LeaderboardCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = dict(data.validated_data)
        user = acting_user(request)
        owner = self.owner(request, given)
        suite = _suite(user, given.pop("suite"))
        board = boards.create_leaderboard(user, owner, given.pop("name"), suite, **given)
        self.kwargs.update(namespace=board.namespace, name=board.name)
        body = LeaderboardDetailSerializer(self.get_named(), context={}).data
        return Response(body, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, namespace: str, name: str) -> Response:
        query = StandingsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = boards.StandingsFilter(**query.validated_data)
        board = self.get_named()
        return Response(LeaderboardDetailSerializer(board, context={"filters": filters}).data)

    @extend_schema(methods=["GET"], parameters=NAMED, responses=SubmissionSerializer(many=True))
    @extend_schema(
        methods=["POST"],
        parameters=NAMED,
        request=SubmissionCreateSerializer,
        responses={201: SubmissionSerializer},
    )
    def submissions(self, request: Request, namespace: str, name: str) -> Response:
        """GET: the board's submissions, newest first. POST: submit a model — it is
        queued (``pending``), evaluated on the board's suite (``running``), then ranked
        (``finished``) or ``failed``."""
        board = self.get_named()
        if request.method == "POST":
            data = SubmissionCreateSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            entry = boards.submit(acting_user(request), board, data.validated_data["model"])
            return Response(SubmissionSerializer(entry).data, status=status.HTTP_201_CREATED)
        queryset = board.submissions.select_related("run", "model_version", "submitted_by")
        page = self.paginate_queryset(queryset.order_by("-created_at", "-pk"))
        return self.get_paginated_response(SubmissionSerializer(page, many=True).data)


def _suite(user: Any, ref: str) -> EvalSuite:
    namespace, _, name = ref.partition("/")
    suite = EvalSuite.objects.restrict(user, "read").filter(namespace=namespace, name=name)
    found = suite.first()
    if found is None:
        raise NotFound(f"No such suite: {ref[:200]}", param="suite")
    return found


# Comparison -----------------------------------------------------------------------------


class CompareQuerySerializer(Serializer):
    a = serializers.CharField(max_length=64, help_text="The baseline run's id")
    b = serializers.CharField(max_length=64, help_text="The run compared with it")
    task = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="One task: namespace/name"
    )
    limit = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=boards.MAX_SAMPLE_DIFFS,
        default=100,
        help_text="Differing samples listed per task",
    )


class PairSerializer(Serializer):
    a = serializers.FloatField(allow_null=True)
    b = serializers.FloatField(allow_null=True)
    delta = serializers.FloatField(allow_null=True, help_text="b − a")


class SampleSideSerializer(Serializer):
    extracted = serializers.CharField(allow_blank=True)
    value = serializers.FloatField()
    error = serializers.CharField(allow_blank=True)


class SampleDiffSerializer(Serializer):
    doc_index = serializers.IntegerField()
    prompt = serializers.CharField(allow_blank=True)
    target = serializers.JSONField(allow_null=True)
    a = SampleSideSerializer()
    b = SampleSideSerializer()


class TaskComparisonSerializer(Serializer):
    task = serializers.CharField()
    primary = serializers.CharField(allow_blank=True)
    metrics = serializers.DictField(child=PairSerializer())
    n_common = serializers.IntegerField(help_text="Documents both runs scored")
    gained = serializers.IntegerField(help_text="Samples where b beats a on the primary metric")
    lost = serializers.IntegerField(help_text="Samples where a beats b")
    p_value = serializers.FloatField(
        allow_null=True, help_text="Two-sided sign test of gained against lost"
    )
    samples = SampleDiffSerializer(many=True)


class ComparisonSerializer(Serializer):
    a = serializers.CharField()
    b = serializers.CharField()
    model_a = serializers.CharField(allow_blank=True)
    model_b = serializers.CharField(allow_blank=True)
    suite = PairSerializer()
    tasks = TaskComparisonSerializer(many=True)


class CompareViewSet(OwnedViewSet):
    """Two runs side by side."""

    permission_classes = [permissions.IsAuthenticatedOrReadOnly, KeyScope]
    scope = "evaluation"
    queryset = Leaderboard.objects.none()  # runs are scoped by the service

    @extend_schema(
        parameters=[CompareQuerySerializer],
        responses={
            200: ComparisonSerializer,
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="A run you may not read"),
            409: OpenApiResponse(OpenApiTypes.OBJECT, description="A run not scored yet"),
        },
    )
    def compare(self, request: Request) -> Response:
        """Run ``b`` against run ``a``: per task each metric's delta, and per sample (same
        task and document) which samples flipped on the primary metric."""
        query = CompareQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        given = query.validated_data
        run_a = boards.get_readable_run(request.user, given["a"], "a")
        run_b = boards.get_readable_run(request.user, given["b"], "b")
        body = boards.compare(
            request.user, run_a, run_b, task=given.get("task", ""), limit=given["limit"]
        )
        return Response(ComparisonSerializer(body).data)


# Arena ----------------------------------------------------------------------------------


class ArenaCreateSerializer(OwnedCreateSerializer):
    contenders = serializers.ListField(
        child=serializers.CharField(max_length=300),
        min_length=2,
        max_length=arenas.MAX_CONTENDERS,
        help_text="The models battles draw from (owner/name, owner/name@N or ft:…)",
    )


class ArenaSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    id = serializers.SerializerMethodField(help_text="namespace/name")
    contenders = serializers.ListField(child=serializers.CharField(), read_only=True)
    votes = serializers.IntegerField(source="ratings_votes", read_only=True)

    class Meta:
        model = Arena
        fields = ["id", "namespace", "name", "title", "description", "visibility"]
        fields += ["contenders", "votes", "created_at"]
        read_only_fields = fields

    def get_id(self, arena: Arena) -> str:
        return str(arena)


class BattleCreateSerializer(Serializer):
    prompt = serializers.CharField(max_length=arenas.MAX_PROMPT_CHARS, trim_whitespace=False)


class VoteSerializer(Serializer):
    winner = serializers.ChoiceField(Winner.choices)


class BattleSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    arena = serializers.CharField(source="arena.__str__", read_only=True)
    winner = serializers.ChoiceField(
        Winner.choices, allow_blank=True, read_only=True, help_text="Blank until the vote"
    )
    model_a = serializers.CharField(
        allow_null=True, read_only=True, help_text="Hidden (null) until the vote"
    )
    model_b = serializers.CharField(
        allow_null=True, read_only=True, help_text="Hidden (null) until the vote"
    )

    class Meta:
        model = Battle
        fields = ["id", "arena", "prompt", "answer_a", "answer_b", "error", "winner"]
        fields += ["model_a", "model_b", "created_at", "voted_at"]
        read_only_fields = fields

    def to_representation(self, battle: Battle) -> dict[str, Any]:
        body: dict[str, Any] = super().to_representation(battle)
        if not arenas.revealed(battle):
            body["model_a"] = body["model_b"] = None
        return body


class RatingSerializer(Serializer):
    model = serializers.CharField()
    rating = serializers.FloatField(help_text="Bradley-Terry, Elo scale, mean 1000")
    lo = serializers.FloatField(help_text="95 % bootstrap interval, low end")
    hi = serializers.FloatField(help_text="95 % bootstrap interval, high end")
    battles = serializers.IntegerField()
    wins = serializers.IntegerField()
    ties = serializers.IntegerField(help_text="Ties and 'both are bad' votes")


class RatingsSerializer(Serializer):
    votes = serializers.IntegerField()
    rounds = serializers.IntegerField(help_text="Bootstrap resamples behind the intervals")
    models = RatingSerializer(many=True)


@extend_schema_view(
    list=extend_schema(responses=ArenaSerializer(many=True)),
    create=extend_schema(request=ArenaCreateSerializer, responses={201: ArenaSerializer}),
    retrieve=extend_schema(parameters=NAMED, responses=ArenaSerializer),
    destroy=extend_schema(parameters=NAMED, responses={204: None}),
)
class ArenaViewSet(BoardViewSet):
    """Arenas you may see: anonymous battles between their models, and ratings."""

    queryset = Arena.objects.all()
    serializer_class = ArenaSerializer

    def create(self, request: Request) -> Response:
        data = ArenaCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = dict(data.validated_data)
        user = acting_user(request)
        owner = self.owner(request, given)
        name, contenders = given.pop("name"), given.pop("contenders")
        arena = arenas.create_arena(user, owner, name, contenders, **given)
        return Response(self.get_serializer(arena).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, namespace: str, name: str) -> Response:
        return Response(self.get_serializer(self.get_named()).data)

    @extend_schema(methods=["GET"], parameters=NAMED, responses=BattleSerializer(many=True))
    @extend_schema(
        methods=["POST"],
        parameters=NAMED,
        request=BattleCreateSerializer,
        responses={201: BattleSerializer},
    )
    def battles(self, request: Request, namespace: str, name: str) -> Response:
        """GET: your battles in this arena, newest first. POST: a new battle — two
        models drawn at random answer your prompt; their names show after your vote."""
        arena = self.get_named()
        user = acting_user(request)
        if request.method == "POST":
            data = BattleCreateSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            battle = arenas.start_battle(user, arena, data.validated_data["prompt"])
            return Response(BattleSerializer(battle).data, status=status.HTTP_201_CREATED)
        page = self.paginate_queryset(arenas.battles_of(user, arena).order_by("-created_at"))
        return self.get_paginated_response(BattleSerializer(page, many=True).data)

    @extend_schema(parameters=NAMED, responses=RatingsSerializer)
    def ratings(self, request: Request, namespace: str, name: str) -> Response:
        """Bradley-Terry ratings of the arena's votes with 95 % bootstrap intervals."""
        return Response(RatingsSerializer(arenas.arena_ratings(self.get_named())).data)


@extend_schema_view(retrieve=extend_schema(parameters=BATTLE, responses=BattleSerializer))
class BattleViewSet(OwnedViewSet):
    """Your battles; a vote reveals the two models."""

    permission_classes = [permissions.IsAuthenticated, KeyScope]
    scope = "evaluation"
    queryset = Arena.objects.none()  # battles are scoped by the service

    def get_queryset(self) -> QuerySet[Any]:
        return arenas.battles_of(self.request.user)

    def retrieve(self, request: Request, id: str) -> Response:
        return Response(BattleSerializer(arenas.get_battle(request.user, id)).data)

    @extend_schema(parameters=BATTLE, request=VoteSerializer, responses=BattleSerializer)
    def vote(self, request: Request, id: str) -> Response:
        """Vote ``a``, ``b``, ``tie`` or ``both_bad`` on your battle, once."""
        battle = arenas.get_battle(request.user, id)
        data = VoteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        battle = arenas.vote(acting_user(request), battle, data.validated_data["winner"])
        return Response(BattleSerializer(battle).data)


NAMED_PATH = r"(?P<namespace>[^/]+)/(?P<name>[^/]+)/"
leaderboard = LeaderboardViewSet.as_view
arena = ArenaViewSet.as_view

urlpatterns: list[URLPattern] = [
    path("leaderboards/", leaderboard({"get": "list", "post": "create"}), name="leaderboard-list"),
    re_path(
        r"^leaderboards/" + NAMED_PATH + "$",
        leaderboard({"get": "retrieve", "delete": "destroy"}),
        name="leaderboard-detail",
    ),
    re_path(
        r"^leaderboards/" + NAMED_PATH + "submissions/$",
        leaderboard({"get": "submissions", "post": "submissions"}),
        name="leaderboard-submissions",
    ),
    path("compare/", CompareViewSet.as_view({"get": "compare"}), name="eval-compare"),
    path("arenas/", arena({"get": "list", "post": "create"}), name="arena-list"),
    re_path(
        r"^arenas/" + NAMED_PATH + "$",
        arena({"get": "retrieve", "delete": "destroy"}),
        name="arena-detail",
    ),
    re_path(
        r"^arenas/" + NAMED_PATH + "battles/$",
        arena({"get": "battles", "post": "battles"}),
        name="arena-battles",
    ),
    re_path(
        r"^arenas/" + NAMED_PATH + "ratings/$", arena({"get": "ratings"}), name="arena-ratings"
    ),
    re_path(
        r"^battles/(?P<id>[^/]+)/$",
        BattleViewSet.as_view({"get": "retrieve"}),
        name="battle-detail",
    ),
    re_path(
        r"^battles/(?P<id>[^/]+)/vote/$",
        BattleViewSet.as_view({"post": "vote"}),
        name="battle-vote",
    ),
]
