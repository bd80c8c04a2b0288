"""Exact match after stripping surrounding whitespace: an `evaluate` metric loaded by path, never by Hub name."""

import datasets
import evaluate

_DESCRIPTION = "Share of predictions equal to their reference once leading and trailing whitespace is stripped."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model answers.
    references (list of str): expected answers, one per prediction.
Returns:
    exact_match (float): share of exact matches in [0, 1]; 0.0 when there are no examples.
Examples:
    >>> metric = evaluate.load("hf_recipes/metrics/exact_match.py")
    >>> metric.compute(predictions=["parse ", "run"], references=["parse", "walk"])
    {'exact_match': 0.5}
"""


class ExactMatch(evaluate.Metric):
    """Exact match of stripped strings."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        pairs = zip(predictions, references, strict=True)
        matches = [prediction.strip() == reference.strip() for prediction, reference in pairs]
        return {"exact_match": sum(matches) / len(matches) if matches else 0.0}
