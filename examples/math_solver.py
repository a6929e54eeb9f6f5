"""Guide, Option 1 (DSPy GEPA): the math solver.

Changed from the guide only in the model (`offline/math`, a deterministic demo
model that knows addition and follows the arithmetic rules in its instructions)
and in filling in the "... more examples".
"""

from __future__ import annotations

import dspy

from optimization import DSPyGepaOptimizer, make_lm


def main() -> object:
    """Run the example; return the optimization result."""
    # Configure DSPy (guide: dspy.LM("openai/gpt-4.1-mini", api_key="..."))
    lm = make_lm("offline/math")
    dspy.configure(lm=lm)

    # Define DSPy program
    class MathSolver(dspy.Module):
        def __init__(self):
            self.solve = dspy.ChainOfThought("question -> answer")

        def forward(self, question):
            return self.solve(question=question)

    # Prepare training data
    trainset = [
        dspy.Example(question=question, answer=answer).with_inputs("question")
        for question, answer in [
            ("What is 2+2?", "4"),
            ("What is 3*5?", "15"),
            ("What is 9-4?", "5"),
            ("What is 6*7?", "42"),
            ("What is 12/4?", "3"),
            ("What is 8+5?", "13"),
            ("What is 20-8?", "12"),
            ("What is 18/3?", "6"),
        ]
    ]

    valset = [
        dspy.Example(question=question, answer=answer).with_inputs("question")
        for question, answer in [
            ("What is 10-3?", "7"),
            ("What is 4*4?", "16"),
            ("What is 9+9?", "18"),
            ("What is 21/7?", "3"),
            ("What is 15-6?", "9"),
            ("What is 7*3?", "21"),
        ]
    ]

    # Define metric
    def accuracy(example, pred, trace=None):
        return 1.0 if example.answer.strip() == pred.answer.strip() else 0.0

    # Optimize with DSPy GEPA
    optimizer = DSPyGepaOptimizer(auto="light")  # light/medium/heavy

    result = optimizer.optimize(program=MathSolver(), trainset=trainset, valset=valset, metric=accuracy)

    # Use optimized program
    optimized_solver = result.optimized_program
    answer = optimized_solver(question="What is 7+8?")
    print(f"Answer: {answer.answer}")
    print(f"Held-out score: {result.initial_score:.2f} -> {result.final_score:.2f}")
    return result


if __name__ == "__main__":
    main()
