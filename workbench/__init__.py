"""MedAlign Workbench: align medical image and text encoders, compare methods on equal terms.

Layers, bottom-up: config/runs/io -> data -> ober -> mining -> models -> eval -> methods ->
train -> viz. Each imports only from layers below it; notebooks only call into this package.
"""

__version__ = "0.1.0"
