"""Analysis on loaded models: feature statistics, lens fidelity, attribution, interventions,
feature matching across versions, generation, and the refusal judge."""
