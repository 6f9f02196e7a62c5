"""The comparison on Ray actors: its plan and tiles (`plan`, `tiles`), the actor pool (`pool`), the stages and the analyses they run (`stages`, `analyses`), and the driver (`compare`)."""
