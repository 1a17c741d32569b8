"""Knowledge base: parse, chunk, embed, store and search the company's documents."""
