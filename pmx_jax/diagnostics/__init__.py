"""Model evaluation: residual diagnostics, NPDE, VPC, goodness-of-fit plots, model comparison."""
