"""Admission: the rate limits and budgets a plan must pass before its call goes out, and settling after."""
