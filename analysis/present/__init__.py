"""What people look at: Altair charts (`chartkit`, `charts`, `heatmaps`, `study_charts`) and the self-contained HTML report (`report`)."""
