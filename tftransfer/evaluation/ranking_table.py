"""What `rank_backbones` returns: `BackboneRanking`, its table and its plot."""

import dataclasses

SCORE_LABELS = {
    "linear_probe": "held-out accuracy of a linear probe",
    "knn": "held-out accuracy of k-nearest neighbours",
    "logme": "LogME (log evidence per example)",
}


@dataclasses.dataclass(frozen=True)
class RankedBackbone:
    """One candidate's row of a `BackboneRanking`.

    Attributes:
        name: the candidate's name.
        score: its score (higher is better).
        method: the scoring method.
        seconds: feature extraction plus scoring.
        feature_dim: the size of its feature vectors.
        extraction_seconds: of `seconds`, the feature extraction.
        load_seconds: building (loading) the candidate, not in `seconds`.
    """

    name: str
    score: float
    method: str
    seconds: float
    feature_dim: int
    extraction_seconds: float = 0.0
    load_seconds: float = 0.0


@dataclasses.dataclass
class BackboneRanking:
    """Candidate backbones scored for one task, best first.

    Attributes:
        method: the scoring method (``"linear_probe"``, ``"knn"``,
            ``"logme"``).
        rows: `RankedBackbone` rows, sorted by score, best first (ties keep
            the candidates' order).
        num_train: training examples the scores used.
        num_held_out: held-out examples the accuracy was measured on (0 for
            LogME).
    """

    method: str
    rows: list
    num_train: int = 0
    num_held_out: int = 0

    @property
    def names(self):
        """The candidates' names, best first."""
        return [row.name for row in self.rows]

    @property
    def scores(self):
        """``{name: score}``, best first."""
        return {row.name: row.score for row in self.rows}

    @property
    def best(self):
        """The name of the best candidate."""
        return self.rows[0].name

    def to_dict(self):
        """A JSON-serializable dict."""
        return {
            "method": self.method,
            "num_train": self.num_train,
            "num_held_out": self.num_held_out,
            "rows": [{"rank": rank, **dataclasses.asdict(row)}
                     for rank, row in enumerate(self.rows, 1)],
        }

    def __str__(self):
        width = max(9, *(len(row.name) for row in self.rows))
        score_width = max(7, len(self.method))
        lines = [f"rank  {'candidate':<{width}}  {self.method:>{score_width}}  features  seconds"]
        for rank, row in enumerate(self.rows, 1):
            lines.append(f"{rank:>4}  {row.name:<{width}}  {row.score:>{score_width}.4f}  "
                         f"{row.feature_dim:>8d}  {row.seconds:>7.2f}")
        return "\n".join(lines)

    def plot(self, *, title=None):
        """Draws the ranking: one horizontal bar per candidate, best on top,
        annotated with its score and seconds.

        Args:
            title: the figure's title. Default: the method and the number of
                examples.

        Returns:
            A `matplotlib.figure.Figure` (no pyplot state):
            ``figure.savefig("ranking.png")`` writes it.
        """
        from matplotlib.figure import Figure

        scores = [row.score for row in self.rows]
        figure = Figure(figsize=(7.0, 1.2 + 0.45 * len(self.rows)), layout="constrained")
        axes = figure.subplots()
        positions = list(range(len(self.rows)))
        axes.barh(positions, scores, color=["tab:green"] + ["tab:blue"] * (len(scores) - 1))
        axes.set_yticks(positions, [row.name for row in self.rows])
        axes.invert_yaxis()  # the best on top
        low, high = min(0.0, *scores), max(0.0, *scores)
        span = (high - low) or 1.0
        axes.set_xlim(low - (0.3 * span if low < 0 else 0.0), high + 0.3 * span)
        for position, row in zip(positions, self.rows):
            axes.text(row.score + (0.01 if row.score >= 0 else -0.01) * span, position,
                      f" {row.score:.3f}  ({row.seconds:.1f} s) ", va="center",
                      ha="left" if row.score >= 0 else "right", fontsize=9)
        axes.axvline(0.0, color="black", linewidth=0.8)
        axes.set_xlabel(SCORE_LABELS.get(self.method, self.method))
        axes.set_title(title or (
            f"{self.method}: {self.num_train} training"
            + (f", {self.num_held_out} held-out" if self.num_held_out else "") + " examples"))
        return figure
