"""Pure ML and analysis. Imports no ray, fabric or textual; runs anywhere."""
