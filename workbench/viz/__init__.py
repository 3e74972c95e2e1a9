"""Plots and widgets for inspecting a trained run: embedding maps, heat maps, retrieval, reports."""
