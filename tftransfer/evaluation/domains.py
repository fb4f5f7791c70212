"""`evaluate_domains`: one model's evaluation report per domain, and the gaps."""

import dataclasses

from tftransfer.evaluation.evaluate import evaluate


@dataclasses.dataclass
class DomainReports:
    """What `evaluate_domains` found.

    Attributes:
        reports: ``{domain: EvaluationReport}``, in the order given.
        reference: the domain the gaps are measured from (the first).
    """

    reports: dict
    reference: str

    @property
    def accuracy(self):
        return {name: report.accuracy for name, report in self.reports.items()}

    @property
    def gap(self):
        """``{domain: reference accuracy - its accuracy}``: how much is lost
        on each domain (0 for the reference)."""
        base = self.reports[self.reference].accuracy
        return {name: base - report.accuracy for name, report in self.reports.items()}

    def to_dict(self):
        return {"reference": self.reference, "accuracy": self.accuracy, "gap": self.gap,
                "reports": {name: r.to_dict() for name, r in self.reports.items()}}

    def __str__(self):
        width = max(6, *(len(n) for n in self.reports))
        lines = [f"{'domain':<{width}}  accuracy     gap     ECE  examples"]
        for name, report in self.reports.items():
            lines.append(f"{name:<{width}}  {report.accuracy:8.3f}  {self.gap[name]:+6.3f}  "
                         f"{report.expected_calibration_error:6.3f}  {report.num_examples:8d}")
        return "\n".join(lines)


def evaluate_domains(model, domains, **kwargs):
    """Evaluates `model` on each domain with `tftransfer.evaluate`.

    Args:
        model: a single-label classifier.
        domains: ``{name: data}``, each anything `evaluate` takes; the first
            is the reference the gaps are measured from (the source domain).
        **kwargs: passed to `evaluate` (``top_k``, ``num_bins``, ...).

    Returns:
        A `DomainReports`: ``.reports``, ``.accuracy``, ``.gap``;
        ``print()`` shows a table.

    Example:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((2,))
    >>> model = keras.Model(inputs, keras.layers.Dense(
    ...     2, use_bias=False, kernel_initializer="identity")(inputs))
    >>> source = (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]))
    >>> target = (np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([0, 1]))
    >>> result = evaluate_domains(model, {"source": source, "target": target}, top_k=1)
    >>> result.gap
    {'source': 0.0, 'target': 0.5}
    """
    if not isinstance(domains, dict) or not domains:
        raise TypeError("`domains` must be a non-empty dict {name: data}, the reference "
                        f"(source) domain first. Received: domains of type "
                        f"{type(domains).__name__}")
    reports = {str(name): evaluate(model, data, **kwargs) for name, data in domains.items()}
    return DomainReports(reports=reports, reference=next(iter(reports)))
