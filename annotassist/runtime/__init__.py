"""How this process uses the machine: threads now; device set-up and the autocast policy later."""
