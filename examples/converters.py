"""Guide, "Convert Between Formats": plain dicts -> DSPy examples, a plain scoring function -> DSPy metric.

Changed from the guide only in the model (`offline/math`, a deterministic demo
model) and in filling in more data.
"""

from __future__ import annotations

import dspy

from optimization import PromptOptimizer, make_lm
from optimization.dspy_gepa_optimizer import convert_to_dspy_examples, create_dspy_metric


def main() -> object:
    """Run the example; return the optimization result."""
    dspy.configure(lm=make_lm("offline/math"))
    program = dspy.Predict("question -> answer")
    optimizer = PromptOptimizer()

    # Standard format
    data = [
        {"question": "2+2?", "answer": "4"},
        {"question": "3+3?", "answer": "6"},
        # ... more
        {"question": "5*3?", "answer": "15"},
        {"question": "9-2?", "answer": "7"},
        {"question": "8*2?", "answer": "16"},
        {"question": "12-5?", "answer": "7"},
        {"question": "6*6?", "answer": "36"},
        {"question": "10-1?", "answer": "9"},
        {"question": "4*5?", "answer": "20"},
        {"question": "7-4?", "answer": "3"},
    ]

    # Convert to DSPy format
    dspy_examples = convert_to_dspy_examples(data=data, input_keys=["question"], output_key="answer")

    # Simple scoring function
    def my_accuracy(expected, predicted):
        return 1.0 if expected == predicted else 0.0

    # Convert to DSPy metric
    dspy_metric = create_dspy_metric(my_accuracy, name="accuracy")

    # Use with DSPy GEPA
    result = optimizer.optimize_with_dspy_gepa(program=program, trainset=dspy_examples, metric=dspy_metric)
    print(f"Held-out score: {result.initial_score:.2f} -> {result.final_score:.2f}")
    return result


if __name__ == "__main__":
    main()
