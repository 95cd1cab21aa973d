"""The audit dossier: a PDF a regulator can read and a bundle anyone can verify offline."""
