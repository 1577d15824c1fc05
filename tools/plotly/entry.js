'use strict';
// Airlock's plotly.js (tools/plotly/build.sh): the core, which holds scatter, and the trace types
// the console draws. A new trace type goes here too (tests/usage/test_dashboard.py checks it).
var Plotly = require('plotly.js/lib/core');
Plotly.register([
    require('plotly.js/lib/bar'),
    require('plotly.js/lib/box'),
    require('plotly.js/lib/histogram'),
    require('plotly.js/lib/pie'),
]);
module.exports = Plotly;
