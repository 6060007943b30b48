"""The conv family's lowering, private: what ``jaxcnn.conv``'s three primitives compute.

``jaxcnn.conv`` holds the maths and the primitives (``conv``, ``input_grad``, ``weight_grad``)
with their named rules; when a primitive is lowered it asks ``rules.choose`` for the function
that computes its piece for the static shapes, and calls it. Every function here computes
exactly one piece's map; they differ in speed and memory only.
"""
