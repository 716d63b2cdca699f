"""How layers are drawn: one symbology per kind of layer, written as MapLibre, QGIS QML and
OGC SLD styles, and the QGIS project that bundles them."""
