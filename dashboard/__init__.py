"""The Streamlit admin dashboard: curation, reviews, knowledge, training and models."""
