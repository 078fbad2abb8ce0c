"""A small module used by the README's Quickstart."""


def mean(values):
    """Return the arithmetic mean of a non-empty sequence."""
    total = 0
    for value in values:
        total += value
    return total / len(values)


def variance(values):
    """Return the population variance of a non-empty sequence."""
    m = mean(values)
    return sum((v - m) ** 2 for v in values) / len(values)


def stdev(values):
    """Return the population standard deviation of a non-empty sequence."""
    
