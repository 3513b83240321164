/*! crier-resume.js: served by Crier at /js/crier-resume.js (and /js/crier-resume.mjs).
 * After pusher-js:
 *   <script src="https://your-crier/js/crier-resume.js"></script>
 * patches window.Pusher. In Node (CommonJS): require('./crier-resume.js')(require('pusher-js')).
 */
(function (root, factory) {
  var crierResume = factory();
  if (typeof module === 'object' && module.exports) {
    module.exports = crierResume;
  } else {
    root.crierResume = crierResume;
    if (root.Pusher) crierResume(root.Pusher);
  }
})(typeof self !== 'undefined' ? self : this, function () {
'use strict';
