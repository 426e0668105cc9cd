"""`bindery import-heads`: bring heads trained elsewhere (EBind's released projectors) into a run."""
